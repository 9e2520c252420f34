"""Parts of benchmark.py that measure one kind of run (cifar.py: one model in its own process;
imagenet.py: data against compute; pack.py: a pack beside one run), and names.py, what a
model's name means."""
