"""``keras_fada.ops.materialize`` and ``materialized_relu`` on JAX's CPU backend.

The value is divided by a runtime one, ``1 + 0 * x``: XLA never duplicates a fusion that holds
a division, so ``x`` is computed once. Neither backward pass may read anything XLA could
recompute from the inputs of ``x`` (it would then keep those inputs alive: in the ResNet, every
conv3 output and shortcut, 2 x 184 MB at 256x512): ``materialize``'s is the identity, and
``materialized_relu``'s reads only the materialized output, ``dy * (y > 0)``.
"""

import jax
import jax.numpy as jnp


def _divide_by_one(x):
    return x / (1 + 0 * x)


@jax.custom_vjp
def materialize(x):
    return _divide_by_one(x)


materialize.defvjp(lambda x: (_divide_by_one(x), None), lambda _, dy: (dy,))


@jax.custom_vjp
def materialized_relu(x):
    return _divide_by_one(jnp.maximum(x, 0))


def _relu_forward(x):
    y = _divide_by_one(jnp.maximum(x, 0))
    return y, y


def _relu_backward(y, dy):
    return (jnp.where(y > 0, dy, jnp.zeros_like(dy)),)


materialized_relu.defvjp(_relu_forward, _relu_backward)
