#pragma once
/// @file torch_module.hpp
/// The Python source of the module export_torch writes (vpdarts_model.py): a ViT with timm's names
/// and every variant of vit_config, the fusion operators' base class, a safetensors reader and load().
/// The operators themselves come from their traits' `torch_source` and are appended after it.

#include <string_view>

namespace vpdarts::detail {

/// vpdarts_model.py up to the operators (see the file's comment).
inline constexpr std::string_view torch_module_source = R"py("""A model found by vpdarts, as a PyTorch module (written by vpdarts export; needs only torch).

    import sys
    sys.path.insert(0, DIR)
    from vpdarts_model import load
    model = load(DIR)          # an nn.Module in eval mode, float32
    logits = model(images)     # images: (N, C, H, W) float32, normalised as model.normalization says

The backbone's parameters keep timm's names (patch_embed.proj.weight, blocks.0.attn.qkv.weight, ...),
so they load into timm's VisionTransformer too; the fusion operators' are fusion.{layer}.{operator}.{symbol},
as in the vpdarts model file. model.class_names names the logits' columns.
"""
import json
import math
import os
import struct

import torch
from torch import nn

__all__ = ["load", "read_safetensors", "VisionTransformer", "PromptedVisionTransformer", "FusionOp"]

_DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(path):
    """The tensors of a safetensors file (a dict name -> tensor) and its metadata (a dict)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than its header size)")
    (size,) = struct.unpack("<Q", blob[:8])
    if size > len(blob) - 8:
        raise ValueError(f"{path}: not a safetensors file (a header of {size} bytes in {len(blob)} bytes)")
    header = json.loads(blob[8 : 8 + size].decode("utf-8"))
    metadata = header.pop("__metadata__", None) or {}
    data = blob[8 + size :]
    tensors = {}
    for name, entry in header.items():
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor '{name}' has dtype {entry['dtype']}, not a floating type")
        begin, end = entry["data_offsets"]
        shape = list(entry["shape"])
        if end == begin:
            tensors[name] = torch.zeros(shape, dtype=dtype)
        else:
            tensors[name] = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype).reshape(shape)
    return tensors, metadata


class QuickGELU(nn.Module):
    """x sigmoid(1.702 x), OpenAI CLIP's activation."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class LayerScale(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Attention(nn.Module):
    def __init__(self, dim, heads, qkv_bias):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d // self.heads), dim=-1)
        return self.proj(torch.matmul(attn, v).transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    def __init__(self, dim, hidden, act):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = QuickGELU() if act == "quick_gelu" else nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """x + g1 attn(LN1(x)), then x + g2 mlp(LN2(x)) (g: LayerScale, or 1)."""

    def __init__(self, c):
        super().__init__()
        d, eps = c["dim"], c["norm_eps"]
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.attn = Attention(d, c["heads"], c["qkv_bias"])
        self.ls1 = LayerScale(d) if c["layer_scale"] else nn.Identity()
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.mlp = Mlp(d, c["mlp"], c["act"])
        self.ls2 = LayerScale(d) if c["layer_scale"] else nn.Identity()

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.proj = nn.Conv2d(c["channels"], c["dim"], c["patch"], stride=c["patch"], bias=c["patch_bias"])

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """The pre-norm ViT with timm's names: tokens [cls ; registers ; patches] + pos_embed, the blocks,
    the final norm, the pooling (the class token or the mean of the patch tokens), fc_norm, the head."""

    def __init__(self, c):
        super().__init__()
        self.config = dict(c)
        d, eps = c["dim"], c["norm_eps"]
        self.prefix = (1 if c["class_token"] else 0) + c["reg_tokens"]
        patches = (c["image"] // c["patch"]) ** 2
        self.patch_embed = PatchEmbed(c)
        if c["class_token"]:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        if c["reg_tokens"] > 0:
            self.reg_token = nn.Parameter(torch.zeros(1, c["reg_tokens"], d))
        pos_tokens = patches if c["no_embed_class"] else patches + self.prefix
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_tokens, d))
        self.norm_pre = nn.LayerNorm(d, eps=eps) if c["pre_norm"] else nn.Identity()
        self.blocks = nn.ModuleList([Block(c) for _ in range(c["depth"])])
        self.norm = nn.LayerNorm(d, eps=eps) if c["final_norm"] else nn.Identity()
        self.fc_norm = nn.LayerNorm(d, eps=eps) if c["fc_norm"] else nn.Identity()
        self.head = nn.Linear(d, c["classes"])

    def embed(self, images):
        c = self.config
        want = (c["channels"], c["image"], c["image"])
        if images.dim() != 4 or tuple(images.shape[1:]) != want:
            raise ValueError(f"images are {tuple(images.shape)}, but the model takes (N, {want[0]}, {want[1]}, {want[2]})")
        x = self.patch_embed(images)
        if c["no_embed_class"]:
            x = x + self.pos_embed
        prefix = []
        if c["class_token"]:
            prefix.append(self.cls_token.expand(x.shape[0], -1, -1))
        if c["reg_tokens"] > 0:
            prefix.append(self.reg_token.expand(x.shape[0], -1, -1))
        x = torch.cat(prefix + [x], dim=1)
        if not c["no_embed_class"]:
            x = x + self.pos_embed
        return self.norm_pre(x)

    def block(self, layer, x):
        return self.blocks[layer](x)

    def forward_features(self, images):
        """The pooled features (N, D), as timm's forward_head(forward_features(x), pre_logits=True)."""
        x = self.embed(images)
        for layer in range(len(self.blocks)):
            x = self.block(layer, x)
        x = self.norm(x)
        x = x[:, 0] if self.config["pool"] == "token" else x[:, self.prefix :].mean(dim=1)
        return self.fc_norm(x)

    def forward(self, images):
        return self.head(self.forward_features(images))


class FusionOp(nn.Module):
    """Base of the fusion operators: layer input x (N, T, D) -> pre(x) -> the frozen block -> post(y) -> (N, T, D).
    Each parameter is an attribute named by its symbol, of its shape in the model file; `prefix` is the
    number of prefix tokens (class token and registers). A subclass sets `name` (the operator's name in
    genotypes) and overrides pre and/or post; both default to the identity."""

    name = None

    def __init__(self, shapes, prefix):
        super().__init__()
        self.prefix = prefix
        for symbol, shape in shapes.items():
            self.register_parameter(symbol, nn.Parameter(torch.zeros(shape)))

    def pre(self, x):
        return x

    def post(self, y):
        return y


class PromptedVisionTransformer(VisionTransformer):
    """The ViT with one fusion operator around every block, as the genotype says."""

    def __init__(self, c, genotype, shapes):
        super().__init__(c)
        known = {}
        todo = list(FusionOp.__subclasses__())
        while todo:
            cls = todo.pop()
            todo.extend(cls.__subclasses__())
            if cls.name:
                known[cls.name] = cls
        self.genotype = list(genotype)
        self.fusion = nn.ModuleList()
        for layer, name in enumerate(self.genotype):
            if name not in known:
                raise ValueError(f"layer {layer}: no PyTorch form of the fusion operator '{name}' (known: {sorted(known)})")
            self.fusion.append(nn.ModuleDict({name: known[name](shapes.get((layer, name), {}), self.prefix)}))

    def block(self, layer, x):
        op = self.fusion[layer][self.genotype[layer]]
        return op.post(self.blocks[layer](op.pre(x)))


def load(directory=None):
    """The exported model in `directory` (default: this file's folder) as an nn.Module in eval mode, float32.
    Its attributes class_names and normalization ({"mean": [...], "std": [...]}) say what its logits
    mean and how images are normalised before it."""
    directory = os.path.dirname(os.path.abspath(__file__)) if directory is None else str(directory)
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    if cfg.get("format") != "vpdarts.torch_export":
        raise ValueError(f"{directory}/config.json was not written by vpdarts export")
    tensors, _ = read_safetensors(os.path.join(directory, "model.safetensors"))
    if cfg["kind"] == "prompted":
        shapes = {}
        for name, t in tensors.items():
            parts = name.split(".")
            if len(parts) == 4 and parts[0] == "fusion":
                shapes.setdefault((int(parts[1]), parts[2]), {})[parts[3]] = tuple(t.shape)
        model = PromptedVisionTransformer(cfg["vit"], cfg["genotype"], shapes)
    else:
        model = VisionTransformer(cfg["vit"])
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    model.class_names = list(cfg["class_names"])
    model.normalization = dict(cfg["normalization"])
    return model.float().eval()


# ---- the fusion operators (each from its vpdarts trait's torch_source)
)py";

}  // namespace vpdarts::detail
