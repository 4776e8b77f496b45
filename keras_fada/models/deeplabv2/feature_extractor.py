"""The functional model class of the feature extractors F (ResNet and VGG bodies)."""

import collections
import contextlib

import keras

from keras_fada.backend import fast_paths, keras_internals, tracing
from keras_fada.layers.convolution import Conv2D
from keras_fada.models.deeplabv2.normalization import FrozenBatchNormalization


@keras.saving.register_keras_serializable(package="keras_fada")
class FeatureExtractor(keras_internals.GraphRunner, keras.Model):
    """A functional ``keras.Model`` that drops each intermediate tensor after its last use.

    Built and saved like any functional model (``FeatureExtractor(inputs, outputs, name=...)``).
    Keras' functional call keeps every layer's output in one dictionary until the whole graph has
    run. Under tracing (TensorFlow graphs, XLA) that costs nothing, but eager backends (torch, or
    ``run_eagerly``) then hold all of ResNet-101's intermediate tensors (conv and BN outputs the
    backward pass never reads) at the end of the forward pass. Here a tensor is released once its
    last consuming layer has run; what autograd saved for the backward pass stays alive through
    autograd, so the source forward pass of a Keras-on-torch FADA step holds much less memory.
    Values are those of ``keras.Model`` (the same layers in the same order).

    A frozen BatchNorm that alone reads a bias-free ``keras_fada.layers.Conv2D`` runs folded into
    it: ``conv(x, W) * s + b`` as ``conv(x, W * s) + b`` (``Conv2D.call_scaled``), so the scale
    multiplies the kernel instead of the activation map, forward and backward, and the shift is
    the convolution's bias. Same function and gradients (float rounding aside; tested against
    ``keras.Model`` over the same layers); the variables and checkpoints are the layers' own. It
    is on where ``keras_fada.backend.fast_paths`` has ``tf_fold_batch_norm`` on
    (``fold_frozen_batch_norm = None``; ``True`` / ``False`` force it).

    On torch a layer that is the last reader of its first input may also overwrite it (frozen
    BatchNorm, ReLU and Add do, as torchvision's in-place ReLU and ``+=``): see
    ``keras_fada/backend/torch_in_place.py``.

    Example:
    >>> inputs = keras.Input((None, None, 3))
    >>> x = keras.layers.ReLU()(keras.layers.Conv2D(8, 3)(inputs))
    >>> FeatureExtractor(inputs, x, name="tiny")(keras.ops.ones((1, 5, 5, 3))).shape
    (1, 3, 3, 8)
    """

    # None: fold where the policy says (TensorFlow on the CPU). There the BatchNorm is a separate pass over the activation
    # map forward and backward, and oneDNN fuses the bias (and ReLU) into the convolution. Torch
    # already runs it in place and XLA fuses it into its neighbours; folded, each saves the scaled
    # kernels for the backward pass: more memory for no gain (figures: benchmarks/RESULTS.md).
    fold_frozen_batch_norm = None

    def _folds(self):
        if self.fold_frozen_batch_norm is None:
            return keras.backend.backend() == "tensorflow" and fast_paths.enabled(
                "tf_fold_batch_norm", self.dtype_policy.compute_dtype
            )
        return bool(self.fold_frozen_batch_norm)

    def run_graph(self, inputs, nodes, operation_fn):
        """Keras' functional graph run (``keras_internals.GraphRunner``) plus the reference counts
        and the folding."""
        tensor_dict = {id(x): y for x, y in zip(self.inputs, inputs, strict=False)}
        keep = {id(x) for x in self.outputs} | {id(x) for x in self.inputs}
        uses = collections.Counter(id(x) for node in nodes for x in node.inputs)
        symbolic = any(isinstance(x, keras.KerasTensor) for x in inputs)
        folded = self.folded_batch_norms(nodes) if self._folds() and not symbolic else {}
        folded_convs = {conv.key for conv in folded.values()}
        for node in nodes:
            if node.key in folded_convs:
                continue  # a folded convolution runs with its BatchNorm
            conv = folded.get(node.key)
            reads = (conv or node).inputs
            if any(id(x) not in tensor_dict for x in reads):
                continue  # not computable: its inputs stay (never released)
            if conv is not None:
                scale, shift = node.operation.scale_and_shift()
                outputs = conv.operation.call_scaled(tensor_dict[id(reads[0])], scale, shift)
            else:
                args, kwargs = node.fill_in(tensor_dict)
                with self._donating(node, tensor_dict, uses, keep):
                    outputs = operation_fn(node.operation)(*args, **kwargs)
                del args, kwargs
            for x, y in zip(node.outputs, keras.tree.flatten(outputs), strict=False):
                tensor_dict[id(x)] = y
            del outputs
            for x in reads:
                uses[id(x)] -= 1
                if uses[id(x)] == 0 and id(x) not in keep:
                    del tensor_dict[id(x)]
        return keras_internals.pack_outputs(self, [tensor_dict[id(x)] for x in self.outputs])

    def folded_batch_norms(self, nodes=None):
        """``{BatchNorm node key: Conv2D node}`` (``keras_internals.GraphNode``) for every
        ``FrozenBatchNormalization`` that is the only reader of a bias-free, linear
        ``keras_fada.layers.Conv2D`` (not a model output)."""
        nodes = keras_internals.graph_nodes(self) if nodes is None else nodes
        readers = collections.defaultdict(list)
        for node in nodes:
            for x in node.inputs:
                readers[id(x)].append(node)
        outputs = {id(x) for x in self.outputs}
        pairs = {}
        for node in nodes:
            conv = node.operation
            if (
                not isinstance(conv, Conv2D)
                or conv.use_bias
                or conv.activation is not keras.activations.linear
            ):
                continue
            (y,) = node.outputs
            (reader, *others) = readers[id(y)] or [None]
            if not others and isinstance(getattr(reader, "operation", None), FrozenBatchNormalization):
                if id(y) not in outputs and len(reader.inputs) == 1:
                    pairs[reader.key] = node
        return pairs

    @staticmethod
    def _donating(node, tensor_dict, uses, keep):
        """On torch: lets the node overwrite its first input when it is that tensor's last reader
        and no other live tensor shares its memory (``keras_fada/backend/torch_in_place.py``)."""
        if keras.backend.backend() != "torch" or not node.inputs or tracing.tracing():
            return contextlib.nullcontext()  # a tracer's tensors have no memory to share
        first = id(node.inputs[0])
        if uses[first] != 1 or first in keep:
            return contextlib.nullcontext()
        from keras_fada.backend import torch_in_place

        tensor = tensor_dict[first]
        if not fast_paths.enabled("torch_in_place", getattr(tensor, "dtype", "float32"), tensor):
            return contextlib.nullcontext()
        others = [y for key, y in tensor_dict.items() if key != first]
        if torch_in_place.shares_memory(tensor, others):
            return contextlib.nullcontext()
        return torch_in_place.donating(tensor)
