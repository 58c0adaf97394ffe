#pragma once
/// @file metadata_keys.hpp
/// Every metadata key vpdarts writes into (and reads from) a safetensors file,
/// in one place. The values are text; see docs/checkpoints.md for each file kind.

namespace vpdarts::io::keys {

/// Attention heads of a ViT (its shapes cannot tell).
inline constexpr const char* heads = "vpdarts.heads";
/// Outputs of the ViT's head (used when the file holds no head).
inline constexpr const char* classes = "vpdarts.classes";
/// LayerNorm eps of a ViT (a number).
inline constexpr const char* norm_eps = "vpdarts.norm_eps";
/// The MLP activation of a ViT: "gelu" or "quick_gelu".
inline constexpr const char* act = "vpdarts.act";
/// The pooling of a ViT: "token" or "avg".
inline constexpr const char* pool = "vpdarts.pool";
/// "true" when a ViT's pos_embed covers the patches only (timm's no_embed_class).
inline constexpr const char* no_embed_class = "vpdarts.no_embed_class";
/// The recipe a built-in backbone was pretrained with.
inline constexpr const char* recipe = "vpdarts.recipe";
/// Prompt tokens p of a prompted model.
inline constexpr const char* prompts = "vpdarts.prompts";
/// The genotype, as the JSON object genotype::to_json() writes.
inline constexpr const char* genotype = "vpdarts.genotype";
/// Model files of version 0.1.0 held the genotype as JSON here (and a comma list under `genotype`).
inline constexpr const char* legacy_genotype_json = "vpdarts.genotype_json";
/// A model file's kind: "prompted" or "probe".
inline constexpr const char* kind = "vpdarts.kind";
/// A model file's class names, as a JSON array of strings.
inline constexpr const char* class_names = "vpdarts.class_names";
/// A model file's input normalisation, as data::normalization::str() writes it.
inline constexpr const char* normalize = "vpdarts.normalize";
/// A search checkpoint's settings (the resume fingerprint), as JSON.
inline constexpr const char* search_settings = "vpdarts.search.settings";
/// A search checkpoint's state (epoch, data order, generator, history), as JSON.
inline constexpr const char* search_state = "vpdarts.search.state";
/// A search checkpoint's checksum over its state and tensors (16 hex digits).
inline constexpr const char* search_checksum = "vpdarts.search.checksum";
/// The OpenMP threads the search that wrote a checkpoint ran with (a resume with
/// the same count continues to the bit; products split over other counts round differently).
inline constexpr const char* search_threads = "vpdarts.search.threads";

}  // namespace vpdarts::io::keys
