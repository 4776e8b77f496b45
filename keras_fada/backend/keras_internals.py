"""The private Keras API that keras-fada relies on, all of it in this one module.

Everywhere else keras_fada/ and benchmarks/ use Keras' public API. ``PRIVATE_API`` names each
private symbol used below, why it is needed and which public alternative was checked;
tests/test_keras_internals.py fails, naming the symbol and the Keras version, when a Keras
release removes or changes one of them. pyproject.toml bounds Keras to ``TESTED_KERAS``: run
that test file against a new release before moving the bound.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import keras

#: The Keras minor version these symbols were checked against.
TESTED_KERAS = "3.15"

#: symbol -> (why keras-fada needs it, the public alternative checked and why it falls short)
PRIVATE_API = {
    "keras.src.backend.AutocastScope": (
        "Conv2D.call_scaled reads its float32 kernel as stored inside a mixed-precision call "
        "(variables_as_stored)",
        "none: Variable.value and ops.convert_to_tensor autocast; a layer built with autocast=False "
        "clears the scope only for its own call",
    ),
    "Function._run_through_graph": (
        "the hook through which Functional.call and compute_output_spec run the graph; "
        "FeatureExtractor runs it itself (GraphRunner.run_graph)",
        "overriding the public call() bypasses Functional.call's input standardisation and its "
        "training propagation",
    ),
    "Function._nodes_by_depth": (
        "the graph's nodes in execution order (graph_nodes)",
        "Model.layers / Model.operations are operations, not nodes: they lack the tensors "
        "between layers; get_config()'s inbound_nodes name layers, not tensors",
    ),
    "Function._get_operation_for_node": (
        "the operation a node runs (Keras' NNX mapping)",
        "Node.operation alone ignores the NNX mapping",
    ),
    "Function._outputs_struct": ("the nesting of the outputs (pack_outputs)", "Model.outputs is flat"),
    "Node.operation / is_input / input_tensors / outputs / arguments.fill_in": (
        "what a graph node computes from which tensors (GraphNode)",
        "keras.src.ops.node.Node has no public export",
    ),
    "JAXTrainer: fit calls model.train_function(state, iterator)": (
        "FADA's JAX step runs as two XLA programs (jax_train_function): the train function is "
        "built here, not by Trainer._make_function, which on Keras' main branch jits the step "
        "itself and would trace both programs into one",
        "make_train_function may be overridden, but the (state, iterator) -> (logs, state) "
        "signature of the function it builds is undocumented",
    ),
    "Trainer._initial_epoch": (
        "the epoch fit() continues at after a backup restored in on_train_begin "
        "(set_initial_epoch; keras.callbacks.BackupAndRestore sets it the same way)",
        "fit(initial_epoch=...) is read before callbacks run; a callback has no public way to move it",
    ),
    "TensorBoard._global_train_batch / _previous_epoch_iterations": (
        "the batch step of keras.callbacks.TensorBoard, continued after a resume "
        "(continue_tensorboard_steps; Keras sets it to 0 in on_train_begin)",
        "update_freq / the public constructor arguments set no starting step",
    ),
    "Optimizer._get_variable_index": (
        "the slot of a variable in update_step (slot_index)",
        "no public name; keras.optimizers.Optimizer's own docstring example uses it",
    ),
    "Adam._momentums / Adam._velocities": (
        "TorchAdam's update reads the moment slots that Adam.build creates (adam_moments)",
        "slots of its own would duplicate Adam's (add_optimizer_variables is public, but Adam.build "
        "creates its own anyway)",
    ),
    "torch backend Variable._value": (
        "the torch.nn.Parameter behind a variable, replaced to change its memory layout "
        "(torch_parameter, set_torch_parameter)",
        "Variable.value may be an autocast copy; assign() copies into the old strides",
    ),
}


# ------------------------------------------------------------------ mixed precision
def variables_as_stored():
    """A scope in which float variables read as stored, not autocast to a compute dtype (what
    Keras enters for a layer built with ``autocast=False``)."""
    from keras.src.backend import AutocastScope

    return AutocastScope(None)


# ------------------------------------------------------------------ functional graphs
class GraphNode(NamedTuple):
    """One call of an operation in a functional model's graph."""

    key: int  # identifies the node within its model
    operation: Any  # the layer or op it runs
    inputs: tuple  # the symbolic tensors it reads
    outputs: tuple  # the symbolic tensors it produces
    fill_in: Callable  # {id(symbolic tensor): value} -> (args, kwargs) of the call


def graph_nodes(model):
    """The nodes of a functional model in execution order, input nodes excluded."""
    by_depth = model._nodes_by_depth
    return [
        GraphNode(
            id(node),
            model._get_operation_for_node(node),
            tuple(node.input_tensors),
            tuple(node.outputs),
            node.arguments.fill_in,
        )
        for depth in sorted(by_depth, reverse=True)
        for node in by_depth[depth]
        if node.operation and not node.is_input
    ]


def pack_outputs(model, flat):
    """``flat`` (one value per ``model.outputs``) in the nesting of the model's outputs."""
    return keras.tree.pack_sequence_as(model._outputs_struct, flat)


class GraphRunner:
    """Mixin for a functional ``keras.Model`` that runs its graph itself.

    Every call that Keras runs through the graph with values (``call``, ``compute_output_spec``)
    goes to ``self.run_graph(inputs, nodes, operation_fn)``: ``inputs`` one value per
    ``self.inputs``, ``nodes`` from ``graph_nodes`` and ``operation_fn(operation)`` the callable
    to run for an operation (it adds ``training``). Keras' connectivity check at construction
    stays Keras' own.
    """

    def _run_through_graph(self, inputs, operation_fn=lambda op: op, call_fn=None):
        if call_fn is not None:
            return super()._run_through_graph(inputs, operation_fn=operation_fn, call_fn=call_fn)
        return self.run_graph(keras.tree.flatten(inputs), graph_nodes(self), operation_fn)


# ------------------------------------------------------------------ JAX trainer
def jax_train_function(model, step):
    """The function JAX's ``fit`` calls per execution, from a ``step(state, data) -> (logs,
    state)``: ``model.steps_per_execution`` steps over the batches of ``iterator``, each a
    call of ``step`` as it is (its jitted programs stay separate)."""

    def train_function(state, iterator):
        logs, state = step(state, next(iterator))
        for _ in range(model.steps_per_execution - 1):
            try:
                data = next(iterator)
            except StopIteration:
                break
            logs, state = step(state, data)
        return logs, state

    return train_function


# ------------------------------------------------------------------ training loop
def set_initial_epoch(model, epoch: int) -> None:
    """Makes the running ``fit`` start at ``epoch`` (what ``BackupAndRestore`` does on restore)."""
    model._initial_epoch = int(epoch)


def continue_tensorboard_steps(callback, step: int) -> None:
    """Makes a ``keras.callbacks.TensorBoard`` count its batch steps from ``step``."""
    callback._global_train_batch = int(step)
    callback._previous_epoch_iterations = int(step)


# ------------------------------------------------------------------ optimisers
def slot_index(optimizer, variable):
    """The index of ``variable``'s slots in the optimiser's slot lists (as built in ``build``)."""
    return optimizer._get_variable_index(variable)


def adam_moments(optimizer, variable):
    """``(m, v)``: the first and second moment variables of ``variable`` in a ``keras.optimizers.Adam``."""
    index = slot_index(optimizer, variable)
    return optimizer._momentums[index], optimizer._velocities[index]


# ------------------------------------------------------------------ torch variables
def torch_parameter(variable):
    """The ``torch.nn.Parameter`` that holds a variable's value on the torch backend (``None``
    before it is initialised)."""
    return variable._value


def set_torch_parameter(variable, parameter):
    """Makes ``parameter`` the variable's storage; before its layer tracks its parameters (in
    ``build``), so ``torch_params``, ``zero_grad`` and the optimisers see the new one."""
    variable._value = parameter
