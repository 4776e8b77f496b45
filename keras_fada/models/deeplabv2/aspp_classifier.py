"""The DeepLabV2 ASPP classifier C of FADA (official ``ASPP_Classifier_V2``)."""

import keras
from keras import layers, ops

from keras_fada.backend import fast_paths, tracing
from keras_fada.layers.convolution import Conv2D
from keras_fada.models.deeplabv2.initializers import normal, torch_default_conv_bias
from keras_fada.ops import shifted_taps_sum


@keras.saving.register_keras_serializable(package="keras_fada")
class ASPPClassifier(layers.Layer):
    """Four parallel 3x3 convolutions with dilations 6/12/18/24 and bias, summed.

    No BN, no ReLU, no dropout; kernels are initialised N(0, 0.01) and biases with PyTorch's
    default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, as in the official code. The output stays at the
    feature resolution (stride 8); the caller upsamples it (``keras_fada.ops.resize_bilinear``).
    The sublayers ``conv2d_list_{i}`` map to the official keys ``conv2d_list.{i}.{weight,bias}``.

    Args:
        num_classes: K, the number of semantic classes.
        dilations: dilation (= PyTorch padding) of each branch.
        kernel_stddev: standard deviation of the normal kernel initialiser.

    Example:
    >>> aspp = ASPPClassifier(num_classes=19)
    >>> aspp(keras.random.normal((1, 33, 65, 2048))).shape
    (1, 33, 65, 19)
    """

    def __init__(self, num_classes, dilations=(6, 12, 18, 24), kernel_stddev=0.01, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.dilations = tuple(int(d) for d in dilations)
        self.kernel_stddev = float(kernel_stddev)
        self.conv2d_list = [
            Conv2D(
                self.num_classes,
                3,
                padding="same",
                dilation_rate=d,
                use_bias=True,
                kernel_initializer=normal(self.kernel_stddev),
                dtype=self.dtype_policy,
                name=f"conv2d_list_{i}",
            )
            for i, d in enumerate(self.dilations)
        ]

    def build(self, input_shape):
        for conv in self.conv2d_list:
            conv.bias_initializer = torch_default_conv_bias(9 * int(input_shape[-1]))
            conv.build(input_shape)

    def call(self, features):
        height, width = features.shape[1], features.shape[2]
        # The fast path prunes taps by the map's size: only for a size known as a Python int
        # (an exporter's symbolic or traced size would bake one size into every other).
        # On only where measured faster (keras_fada/backend/fast_paths.py: aspp_one_gemm).
        if not tracing.static_size(height, width) or not fast_paths.enabled(
            "aspp_one_gemm", features.dtype, features
        ):
            out = self.conv2d_list[0](features)
            for conv in self.conv2d_list[1:]:
                out = out + conv(features)
            return out
        return self._taps_as_one_gemm(features, height, width)

    def _taps_as_one_gemm(self, features, height, width):
        """The same sum, computed as one GEMM over every tap of every branch, then shift-and-add.

        Each branch is ``sum_t W_t^T x[p + d * t]`` over its 9 taps ``t``: so the output is
        ``sum_t shift(x @ W_t)``. With K = 19 output channels a dilated convolution is too thin
        for any backend's convolution kernel (TF's space-to-batch, oneDNN's and XLA's dilated
        kernels alike), while one ``(HW, 2048) @ (2048, 33 K)`` GEMM runs at full speed
        (docs/performance.md).
        Taps that fall wholly outside the map (a dilation as large as the map) contribute zero
        and are dropped; the centre taps of the four branches read the same pixels, so their
        kernels are summed first.
        """
        dtype = features.dtype
        kernels = {}
        for conv, d in zip(self.conv2d_list, self.dilations, strict=True):
            kernel = ops.cast(conv.kernel, dtype)
            for i in range(3):
                for j in range(3):
                    offset = ((i - 1) * d, (j - 1) * d)
                    if abs(offset[0]) >= height or abs(offset[1]) >= width:
                        continue
                    tap = kernel[i, j]
                    kernels[offset] = kernels[offset] + tap if offset in kernels else tap
        bias = sum(ops.cast(conv.bias, dtype) for conv in self.conv2d_list)
        flat = ops.concatenate(list(kernels.values()), axis=-1)
        return shifted_taps_sum(features, flat, list(kernels), self.num_classes) + bias

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_classes,)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes, dilations=list(self.dilations), kernel_stddev=self.kernel_stddev
        )
        return config
