"""``keras_fada.ops.materialized_relu`` on JAX's CPU backend.

The output is divided by a runtime one, ``1 + 0 * y``: XLA never duplicates a fusion that holds
a division, so ``y`` is computed once. The backward pass reads only ``y``, ``dy * (y > 0)``:
anything XLA could recompute from the ReLU's inputs would keep those inputs alive (in the
ResNet, every conv3 output and shortcut).
"""

import jax
import jax.numpy as jnp


def _divide_by_one(x):
    return x / (1 + 0 * x)


@jax.custom_vjp
def materialized_relu(x):
    return _divide_by_one(jnp.maximum(x, 0))


def _relu_forward(x):
    y = _divide_by_one(jnp.maximum(x, 0))
    return y, y


def _relu_backward(y, dy):
    return (jnp.where(y > 0, dy, jnp.zeros_like(dy)),)


materialized_relu.defvjp(_relu_forward, _relu_backward)
