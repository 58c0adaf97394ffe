#pragma once
/// @file metadata_keys.hpp
/// Every metadata key vpdarts writes into (and reads from) a safetensors file,
/// in one place. The values are text; see docs/checkpoints.md for each file kind.

namespace vpdarts::io::keys {

/// Attention heads of a ViT (its shapes cannot tell).
inline constexpr const char* heads = "vpdarts.heads";
/// Outputs of the ViT's head (used when the file holds no head).
inline constexpr const char* classes = "vpdarts.classes";
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

}  // namespace vpdarts::io::keys
