"""The functional model class of the feature extractors F (ResNet and VGG bodies)."""

import collections
import contextlib

import keras
from keras import tree


@keras.saving.register_keras_serializable(package="keras_fada")
class FeatureExtractor(keras.Model):
    """A functional ``keras.Model`` that drops each intermediate tensor after its last use.

    Built and saved like any functional model (``FeatureExtractor(inputs, outputs, name=...)``).
    Keras' functional call keeps every layer's output in one dictionary until the whole graph has
    run. Under tracing (TensorFlow graphs, XLA) that costs nothing, but eager backends (torch, or
    ``run_eagerly``) then hold all of ResNet-101's intermediate tensors (conv and BN outputs the
    backward pass never reads) at the end of the forward pass. Here a tensor is released once its
    last consuming layer has run; what autograd saved for the backward pass stays alive through
    autograd. Keras-on-torch FADA step at 256×512: the source forward pass grew the process by
    1.85 GB instead of 1.2 GB. Values are those of ``keras.Model`` (the same layers in the same order).

    On torch a layer that is the last reader of its first input may also overwrite it (frozen
    BatchNorm, ReLU and Add do, as torchvision's in-place ReLU and ``+=``): see
    ``keras_fada/backend/torch_in_place.py``.

    Example:
    >>> inputs = keras.Input((None, None, 3))
    >>> x = keras.layers.ReLU()(keras.layers.Conv2D(8, 3)(inputs))
    >>> FeatureExtractor(inputs, x, name="tiny")(keras.ops.ones((1, 5, 5, 3))).shape
    (1, 3, 3, 8)
    """

    def _run_through_graph(self, inputs, operation_fn=lambda op: op, call_fn=None):
        # Keras' Function._run_through_graph (3.15) plus the reference counts.
        inputs = tree.flatten(inputs)
        tensor_dict = {id(x): y for x, y in zip(self.inputs, inputs, strict=False)}
        keep = {id(x) for x in self.outputs} | {id(x) for x in self.inputs}
        depths = sorted(self._nodes_by_depth, reverse=True)
        uses = collections.Counter(
            id(x)
            for depth in depths
            for node in self._nodes_by_depth[depth]
            if node.operation and not node.is_input
            for x in node.input_tensors
        )
        for depth in depths:
            for node in self._nodes_by_depth[depth]:
                if not node.operation or node.is_input:
                    continue
                if any(id(x) not in tensor_dict for x in node.input_tensors):
                    continue  # not computable: its inputs stay (never released)
                args, kwargs = node.arguments.fill_in(tensor_dict)
                with self._donating(node, tensor_dict, uses, keep):
                    if call_fn is not None:
                        outputs = call_fn(operation_fn(node.operation), *args, **kwargs)
                    else:
                        outputs = operation_fn(self._get_operation_for_node(node))(*args, **kwargs)
                del args, kwargs
                for x, y in zip(node.outputs, tree.flatten(outputs), strict=False):
                    tensor_dict[id(x)] = y
                del outputs
                for x in node.input_tensors:
                    uses[id(x)] -= 1
                    if uses[id(x)] == 0 and id(x) not in keep:
                        del tensor_dict[id(x)]
        return tree.pack_sequence_as(self._outputs_struct, [tensor_dict[id(x)] for x in self.outputs])

    @staticmethod
    def _donating(node, tensor_dict, uses, keep):
        """On torch: lets the node overwrite its first input when it is that tensor's last reader
        and no other live tensor shares its memory (``keras_fada/backend/torch_in_place.py``)."""
        if keras.backend.backend() != "torch" or not node.input_tensors:
            return contextlib.nullcontext()
        first = id(node.input_tensors[0])
        if uses[first] != 1 or first in keep:
            return contextlib.nullcontext()
        from keras_fada.backend import torch_in_place

        tensor = tensor_dict[first]
        others = [y for key, y in tensor_dict.items() if key != first]
        if torch_in_place.shares_memory(tensor, others):
            return contextlib.nullcontext()
        return torch_in_place.donating(tensor)
