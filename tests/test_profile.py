"""benchmarks/profile.py: a step's kernels sorted into kinds and summed per step, and a real
(CPU) profile of the step and of evaluation."""
import json

import pytest

from benchmarks import profile


@pytest.mark.parametrize('name, kind', [
    ('sm90_xmma_fprop_implicit_gemm_indexed_f32f32_tf32f32_f32_nhwckrsc_nchw', 'convolution'),
    ('void cudnn::cnn::wgrad2d_grouped_direct_kernel<float>', 'convolution backward'),
    ('sm80_xmma_dgrad_implicit_gemm_indexed_f32f32', 'convolution backward'),
    ('void at::native::batch_norm_collect_statistics_kernel<float>', 'batchnorm'),
    ('void cudnn::bn_fw_tr_1C11_kernel_NCHW<float, float, int, 512, true, 1, true>',
     'batchnorm'),
    ('void cudnn::bn_bw_1C11_kernel_new<float, float, float2, 512, true, 1>', 'batchnorm'),
    ('void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedSgdMathFunctor>',
     'optimizer'),
    ('void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>',
     'elementwise'),
    ('void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float>', 'loss and softmax'),
    ('aten::index', 'augmentation and copies'),
    ('something unheard of', 'other'),
])
def test_kernels_are_sorted_into_kinds_by_name(name, kind):
    assert profile.kind_of(name) == kind


def test_a_breakdown_sums_each_kind_per_step():
    events = [('sm80_xmma_fprop_implicit_gemm', 3000.0), ('cudnn::bn_fw_tr_1C11_kernel', 1000.0),
              ('multi_tensor_apply_kernel<FusedSgdMathFunctor>', 500.0),
              ('sm80_xmma_dgrad_implicit_gemm', 1500.0)]
    assert profile.breakdown(events, 2) == {
        'kernels per step': 2.0, 'ms per step': 3.0,
        'kinds': {'convolution': 1.5, 'convolution backward': 0.75, 'batchnorm': 0.5,
                  'optimizer': 0.25}}


def test_a_profile_of_the_real_step_and_evaluation(tmp_path, capsys):
    out = tmp_path / 'p.json'
    assert profile.main(['--models', 'one_resnet-8', '--device', 'cpu', '--batch', '16',
                         '--steps', '1', '--warmup', '1', '--json', str(out)]) == 0
    result, = json.loads(out.read_text())
    for part in ('train', 'evaluation'):
        breakdown = result[part]
        assert breakdown['kernels per step'] > 50
        assert breakdown['ms per step'] > 0 and 'convolution' in breakdown['kinds']
    assert 'convolution backward' in result['train']['kinds']
    assert 'convolution backward' not in result['evaluation']['kinds']
    assert 'one_resnet-8 train' in capsys.readouterr().out
