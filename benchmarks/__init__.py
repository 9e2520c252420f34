"""Parts of benchmark.py that measure one kind of run (imagenet.py: data against compute)."""
