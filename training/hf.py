"""Hugging Face `transformers` VideoMAE <-> ours: config and parameter names, as pure functions.

Nothing here imports transformers (only `require_transformers` does, when asked): reading a transformers
folder needs only its config.json and safetensors; writing one (smile_synth/app/export.py) builds the
config with transformers' own VideoMAEConfig. A config.json is untrusted: `student_from_config` is the one
place that reads it, through StudentConfig.validate, its messages naming config.json's keys (HF_NAMES).

The three transformers classes and our three layouts:

    VideoMAEModel                   encoder (encoder.pt):     patch_embed.*, blocks.N.*, norm.*
    VideoMAEForPreTraining          PretrainVideoTransformer: encoder.*, encoder_to_decoder, mask_token, decoder.*
    VideoMAEForVideoClassification  VideoClassifier:          patch_embed.*, blocks.N.*, fc_norm.*, head.*

The final norm. VideoMAEModel has its `layernorm` only when use_mean_pooling=False; its output is then
last_hidden_state = layernorm(last block). With use_mean_pooling=True it has none, and
VideoMAEForVideoClassification averages the last block's tokens and applies `fc_norm`, then `classifier`.
So an encoder or pretraining model is exported with use_mean_pooling=False and our encoder's `norm` as
`videomae.layernorm` (last_hidden_state == our encoder's tokens), and a classifier with use_mean_pooling=True,
`fc_norm` and `classifier` (our `head`): VideoMAE's fine-tuning layout. To fine-tune an encoder export in
transformers, pass use_mean_pooling=True to from_pretrained: `layernorm` is dropped and `fc_norm` starts
fresh, as VideoMAE's own fine-tuning does.

Attention. Ours (as VideoMAE's) is one qkv weight (3C, C), rows [q; k; v], and separate q/v biases (k has
none); transformers has query/key/value weights (C, C) each, and stores the biases as `q_bias`/`v_bias`
(transformers 4.x's parameter names; 5.x renames them to query.bias/value.bias on load and back on save),
so exports write q_bias/v_bias and imports take either.

Known deviation: transformers builds `fc_norm` and the decoder's `norm` as LayerNorm with its default eps
1e-5, where VideoMAE and we use 1e-6 (the blocks and `layernorm` follow config.layer_norm_eps, written as
1e-6). That moves logits and pixel predictions by far less than 1e-4 (tests/test_hf.py measures it).
"""
from __future__ import annotations

import dataclasses
import re

import torch

from smile_synth.errors import UserError, shown

from .models import MAX_MLP_RATIO, StudentConfig

INSTALL_HINT = 'pip install -e ".[hf]"'
MODEL_TYPE = "videomae"
ENCODER, PRETRAINING, CLASSIFIER = "VideoMAEModel", "VideoMAEForPreTraining", "VideoMAEForVideoClassification"
LAYER_NORM_EPS = 1e-6      # ours, everywhere (transformers' default, 1e-12, is not VideoMAE's)

# inside one block: our name prefix -> transformers' (qkv is split / joined separately)
_BLOCK_TO_HF = (("norm1.", "layernorm_before."), ("attn.q_bias", "attention.attention.q_bias"),
                ("attn.v_bias", "attention.attention.v_bias"), ("attn.proj.", "attention.output.dense."),
                ("norm2.", "layernorm_after."), ("mlp.fc1.", "intermediate.dense."), ("mlp.fc2.", "output.dense."))
# transformers 5.x's in-memory names of the q/v biases (what its state_dict() holds)
_BIAS_ALIASES = {"attention.attention.query.bias": "attention.attention.q_bias",
                 "attention.attention.value.bias": "attention.attention.v_bias"}
_QKV = ("query", "key", "value")
_HF_LAYER = re.compile(r"^(?:videomae\.)?encoder\.layer\.\d+\.")


def require_transformers(what: str = "this"):
    """The transformers module, or one UserError saying what to install."""
    try:
        import transformers
        from transformers import VideoMAEConfig  # noqa: F401 - VideoMAE is there (transformers >= 4.22)
    except ImportError:
        raise UserError(f"{what} needs the transformers package (with VideoMAE), which is not installed; "
                        f"install it with: {INSTALL_HINT}") from None
    return transformers


# ---- config --------------------------------------------------------------------------------------------

def pixel_dim(cfg: StudentConfig) -> int:
    """Width of a token's pixel target (what transformers' pretraining decoder predicts): 3 x tubelet x patch^2."""
    return 3 * cfg.tubelet * cfg.patch ** 2


def videomae_config(cfg: StudentConfig, mean_pooling: bool, norm_pix_loss: bool = True) -> dict:
    """The VideoMAEConfig keyword arguments for a student's geometry. `mean_pooling`: False for an encoder or
    pretraining model (keeps `layernorm`), True for a classifier (`fc_norm`); see the module docstring.
    `norm_pix_loss`: the pixel target is standardized per patch (ours is: training/targets.py:pixel_targets)."""
    return {"model_type": MODEL_TYPE, "image_size": cfg.size, "patch_size": cfg.patch, "num_channels": 3,
            "num_frames": cfg.frames, "tubelet_size": cfg.tubelet, "hidden_size": cfg.dim,
            "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.heads,
            "intermediate_size": int(cfg.dim * cfg.mlp_ratio), "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "layer_norm_eps": LAYER_NORM_EPS,
            "qkv_bias": True, "use_mean_pooling": mean_pooling, "norm_pix_loss": norm_pix_loss,
            "decoder_hidden_size": cfg.decoder_dim, "decoder_num_hidden_layers": cfg.decoder_depth,
            "decoder_num_attention_heads": cfg.decoder_heads,
            "decoder_intermediate_size": int(cfg.decoder_dim * cfg.mlp_ratio)}


# our StudentConfig field -> (its config.json key, transformers' default when the key is absent)
HF_GEOMETRY = {"size": ("image_size", 224), "frames": ("num_frames", 16), "patch": ("patch_size", 16),
               "tubelet": ("tubelet_size", 2), "dim": ("hidden_size", 768), "depth": ("num_hidden_layers", 12),
               "heads": ("num_attention_heads", 12), "decoder_dim": ("decoder_hidden_size", 384),
               "decoder_depth": ("decoder_num_hidden_layers", 4),
               "decoder_heads": ("decoder_num_attention_heads", 6)}
HF_INTERMEDIATE = {"dim": ("intermediate_size", 3072), "decoder_dim": ("decoder_intermediate_size", 1536)}
# how messages name each field when it came from a config.json (StudentConfig.validate's `names`)
HF_NAMES = {**{ours: key for ours, (key, _) in HF_GEOMETRY.items()},
            "mlp_ratio": "intermediate_size / hidden_size", "target_dim": "3 x tubelet_size x patch_size^2"}


def _square(value, what: str, where: str):
    """A size from transformers' int or [h, w] (ours are square); its type is checked by StudentConfig.validate."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise UserError(f"{where}: {what} {shown(value)} is not square; only square frames and patches "
                            "are supported")
        value = value[0]
    return value


def _intermediate(config: dict, width: str, cfg: StudentConfig, where: str) -> int:
    """config.json's MLP width for the encoder (`width` "dim") or decoder ("decoder_dim"): a whole number
    from 1 to MAX_MLP_RATIO x that width, else one UserError naming the key."""
    key, default = HF_INTERMEDIATE[width]
    value, most = config.get(key, default), int(MAX_MLP_RATIO * getattr(cfg, width))
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
        raise UserError(f"{where}: {key} {shown(value)} must be a whole number from 1 to {most} "
                        f"({MAX_MLP_RATIO:g} x {HF_NAMES[width]})")
    return value


def defaulted_fields(config: dict) -> dict[str, str]:
    """{our StudentConfig field: its config.json key} of the geometry keys a config.json lacks, whose values
    are then transformers' defaults (a base model's)."""
    keys = {ours: key for ours, (key, _) in HF_GEOMETRY.items()} | {"mlp_ratio": HF_INTERMEDIATE["dim"][0]}
    return {ours: key for ours, key in keys.items() if key not in config}


def student_from_config(config: dict, where: str = "config.json") -> StudentConfig:
    """The StudentConfig of a transformers VideoMAEConfig dict (config.json), validated (the same checks as
    every student's, the messages naming config.json's keys); one UserError for a bad value or what our
    models cannot represent. Absent keys take transformers' defaults."""
    if config.get("model_type") != MODEL_TYPE:
        raise UserError(f"{where} is a transformers {shown(config.get('model_type'))} model, not "
                        "VideoMAE; only VideoMAE folders can be read")
    if config.get("num_channels", 3) != 3:
        raise UserError(f"{where}: num_channels {shown(config['num_channels'])}, only RGB (3) is supported")
    if config.get("hidden_act", "gelu") != "gelu":
        raise UserError(f"{where}: hidden_act {shown(config['hidden_act'])}, only gelu is supported")
    raw = {ours: config.get(key, default) for ours, (key, default) in HF_GEOMETRY.items()}
    raw.update(size=_square(raw["size"], "image_size", where), patch=_square(raw["patch"], "patch_size", where))
    cfg = StudentConfig(**raw, drop_path=0.0).validate(where, HF_NAMES)          # sizes are whole numbers now
    mlp_ratio = _intermediate(config, "dim", cfg, where) / cfg.dim
    decoder_intermediate = _intermediate(config, "decoder_dim", cfg, where)
    if decoder_intermediate != int(cfg.decoder_dim * mlp_ratio):
        raise UserError(f"{where}: decoder_intermediate_size {decoder_intermediate} is not {mlp_ratio:g} x "
                        f"decoder_hidden_size {cfg.decoder_dim} (the encoder's ratio), which is all ours support")
    return dataclasses.replace(cfg, mlp_ratio=mlp_ratio, target_dim=pixel_dim(cfg)).validate(where, HF_NAMES)


def label_maps(class_names: list[str]) -> dict:
    """id2label / label2id of a transformers config."""
    return {"id2label": {i: str(n) for i, n in enumerate(class_names)},
            "label2id": {str(n): i for i, n in enumerate(class_names)}}


def classifier_from_config(config: dict, where: str = "config.json") -> dict | None:
    """Our "classifier" entry ({"num_classes", "class_names"}) from a config's id2label; None without one.
    A key that is not a class index is one UserError (transformers cannot read such a config either); an
    index without a name (sparse keys) is named LABEL_i, as transformers does."""
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return None
    names = {}
    for key, name in id2label.items():
        try:
            names[int(key)] = str(name)
        except ValueError:
            raise UserError(f"{where}: id2label key {shown(key)} is not a class index (0, 1, ...)") from None
    return {"num_classes": len(names), "class_names": [names.get(i, f"LABEL_{i}") for i in range(len(names))]}


# ---- parameter names: ours -> transformers ---------------------------------------------------------

def layout_of(weights: dict) -> str:
    """Which of our layouts a state dict (our names) has: PRETRAINING, CLASSIFIER or ENCODER (see above)."""
    if any(k.startswith(("decoder.", "encoder_to_decoder")) for k in weights):
        return PRETRAINING
    if "head.weight" in weights and "fc_norm.weight" in weights:
        return CLASSIFIER
    return ENCODER


def _block_to_hf(rest: str, v: torch.Tensor, where: str) -> dict[str, torch.Tensor]:
    """One block's entry, `rest` its name inside the block (e.g. "attn.qkv.weight") -> transformers' entries."""
    if rest == "attn.qkv.weight":                                          # (3C, C) -> 3 x (C, C)
        return {f"attention.attention.{n}.weight": w.contiguous() for n, w in zip(_QKV, v.chunk(3, dim=0))}
    for ours, theirs in _BLOCK_TO_HF:
        if rest.startswith(ours):
            return {theirs + rest[len(ours):]: v}
    raise UserError(f"{where}: cannot convert parameter {shown(rest)} of a block to transformers' VideoMAE")


def _trunk_to_hf(k: str, v: torch.Tensor) -> dict[str, torch.Tensor]:
    """Encoder names (patch_embed.*, blocks.N.*, norm.*) -> VideoMAEModel's (embeddings.*, encoder.layer.N.*,
    layernorm.*)."""
    if k.startswith("patch_embed.proj."):
        return {"embeddings.patch_embeddings.projection." + k.removeprefix("patch_embed.proj."): v}
    m = re.match(r"blocks\.(\d+)\.(.+)$", k)
    if m:
        return {f"encoder.layer.{m[1]}.{n}": w for n, w in _block_to_hf(m[2], v, k).items()}
    if k.startswith("norm."):
        return {"layernorm." + k.removeprefix("norm."): v}
    raise UserError(f"cannot convert parameter {shown(k)} to transformers' VideoMAE")


def to_hf(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict (any layout) -> the keys transformers' save_pretrained writes for the matching class:
    ENCODER -> VideoMAEModel (no prefix), PRETRAINING -> VideoMAEForPreTraining, CLASSIFIER ->
    VideoMAEForVideoClassification (both "videomae."-prefixed). Tensors are shared, not copied."""
    layout, out = layout_of(weights), {}
    for k, v in weights.items():
        if layout == PRETRAINING:
            if k.startswith("encoder."):
                out.update({"videomae." + n: w for n, w in _trunk_to_hf(k.removeprefix("encoder."), v).items()})
            elif (m := re.match(r"decoder\.blocks\.(\d+)\.(.+)$", k)):
                out.update({f"decoder.decoder_layers.{m[1]}.{n}": w for n, w in _block_to_hf(m[2], v, k).items()})
            elif k.startswith(("decoder.norm.", "decoder.head.")) or k in ("encoder_to_decoder.weight", "mask_token"):
                out[k] = v                                                 # same names there
            else:
                raise UserError(f"cannot convert parameter {shown(k)} to transformers' "
                                "VideoMAEForPreTraining")
        elif layout == CLASSIFIER and k.startswith(("fc_norm.", "head.")):
            out[k.replace("head.", "classifier.", 1) if k.startswith("head.") else k] = v
        elif layout == CLASSIFIER:
            out.update({"videomae." + n: w for n, w in _trunk_to_hf(k, v).items()})
        else:
            out.update(_trunk_to_hf(k, v))
    return out


# ---- parameter names: transformers -> ours ---------------------------------------------------------

def is_hf_state_dict(weights) -> bool:
    """Are these transformers VideoMAE names (a *ForPreTraining / *ForVideoClassification with "videomae.",
    or a bare VideoMAEModel: "embeddings.", "encoder.layer.N.")? Ours never have them."""
    return any(k.startswith(("videomae.", "embeddings.patch_embeddings.")) or _HF_LAYER.match(k) for k in weights)


def _blocks_from_hf(entries: dict[str, dict[str, torch.Tensor]], prefix: str, where: str) -> dict[str, torch.Tensor]:
    """{block index: {name inside a transformers layer: tensor}} -> our `prefix`blocks.N.* entries; q/k/v
    weights are stacked into qkv; absent q/v biases (qv_bias=False) become zeros (the same function)."""
    from_hf = {theirs: ours for ours, theirs in _BLOCK_TO_HF}
    out = {}
    for i, layer in sorted(entries.items(), key=lambda e: int(e[0])):
        layer = {_BIAS_ALIASES.get(n, n): w for n, w in layer.items()}
        names = [f"attention.attention.{n}.weight" for n in _QKV]
        if not all(n in layer for n in names):
            raise UserError(f"{where}: layer {i} lacks its query/key/value weights; is it a complete VideoMAE "
                            "checkpoint?")
        if "attention.attention.key.bias" in layer:
            raise UserError(f"{where}: layer {i} has a key bias, which VideoMAE's attention (and ours) does not have")
        qkv = [layer.pop(n) for n in names]
        out[f"{prefix}blocks.{i}.attn.qkv.weight"] = torch.cat(qkv, dim=0)                      # 3 x (C, C) -> (3C, C)
        for bias in ("attention.attention.q_bias", "attention.attention.v_bias"):
            layer.setdefault(bias, torch.zeros(qkv[0].shape[0], dtype=qkv[0].dtype))
        for n, w in layer.items():
            ours = next((o + n[len(t):] for t, o in from_hf.items() if n.startswith(t)), None)
            # a name it does not know is kept (under "hf.") and reported unused by the loaders
            out[f"{prefix}blocks.{i}.{ours}" if ours else f"{prefix}blocks.{i}.hf.{n}"] = w
    return out


def from_hf(weights: dict[str, torch.Tensor], where: str = "the checkpoint") -> dict[str, torch.Tensor]:
    """transformers VideoMAE names -> ours: a VideoMAEForPreTraining's become PretrainVideoTransformer's
    (encoder.*, decoder.*), a VideoMAEForVideoClassification's VideoClassifier's (fc_norm, head), a
    VideoMAEModel's our encoder's (patch_embed, blocks, norm). Fixed position tables, if saved, are dropped;
    names it does not know are kept as they are (loaders report them as unused)."""
    base = {k.removeprefix("videomae."): v for k, v in weights.items()}
    trunk = "encoder." if layout_of(base) == PRETRAINING else ""        # the decoder's names are ours there
    layers: dict[str, dict[str, dict[str, torch.Tensor]]] = {"encoder": {}, "decoder": {}}
    out = {}
    for k, v in base.items():
        if "position_embeddings" in k:
            continue                                                       # fixed sin-cos, rebuilt by our models
        if (m := re.match(r"(encoder\.layer|decoder\.decoder_layers)\.(\d+)\.(.+)$", k)):
            layers["encoder" if m[1] == "encoder.layer" else "decoder"].setdefault(m[2], {})[m[3]] = v
        elif k.startswith("embeddings.patch_embeddings.projection."):
            out[trunk + "patch_embed.proj." + k.removeprefix("embeddings.patch_embeddings.projection.")] = v
        elif k.startswith("layernorm."):
            out[trunk + "norm." + k.removeprefix("layernorm.")] = v
        elif k.startswith("classifier."):
            out["head." + k.removeprefix("classifier.")] = v
        else:                      # fc_norm.*, encoder_to_decoder.weight, mask_token, decoder.norm.*, decoder.head.*
            out[k] = v
    out.update(_blocks_from_hf(layers["encoder"], trunk, where))
    out.update(_blocks_from_hf(layers["decoder"], "decoder.", where))
    return out
