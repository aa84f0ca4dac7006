"""Decoder-only transformer, size presets, parameter and FLOP accounting.

- `models.config`: `ModelConfig`, the validated shape and numerics of one model.
- `models.transformer`: the Flax module and `init_params`, `forward`, `loss_fn`,
  `token_losses` (pure functions over a params pytree, ready for jit and vmap).
- `models.presets`: sizes by name (`PRESETS`, `LADDER`), `model_config`, and
  `parse_size` / `format_size` for counts written as "470M".
- `models.accounting`: `param_count` and `flops_per_token`.

Only `models.transformer` imports JAX; the rest loads with the standard library alone.
"""
