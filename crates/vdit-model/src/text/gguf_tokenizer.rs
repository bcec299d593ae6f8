//! The SentencePiece unigram tokenizer a GGUF text encoder carries in its metadata, as
//! llama.cpp's converter writes it from the model's `spiece.model`:
//!
//! - `tokenizer.ggml.model` = "t5" (llama.cpp's name for SentencePiece unigram);
//! - `tokenizer.ggml.tokens`, `.scores`, `.token_type` (1 normal, 2 unknown, 3 control,
//!   4 user-defined, 5 unused, 6 byte), the vocabulary padded to the embedding's rows with unused
//!   "[PAD<i>]" pieces;
//! - `tokenizer.ggml.precompiled_charsmap`: the normalizer's character map (bytes), the same map a
//!   tokenizer.json's `Precompiled` normalizer holds in base64;
//! - `tokenizer.ggml.add_space_prefix`, `.remove_extra_whitespaces`;
//! - `tokenizer.ggml.eos_token_id`, `.unknown_token_id`, `.padding_token_id`.
//!
//! The tokenizer built from them is the one transformers' converter makes of the same SentencePiece
//! model as tokenizer.json: the character map then `" {2,}" -> " "` as normalizer, Metaspace
//! (prepended "▁" where add_space_prefix) as pre-tokenizer and decoder, the pieces and scores as a
//! Unigram model, control and unknown pieces as special tokens, EOS appended by the
//! post-processor. The padding pieces after the last real one are left out: they are no part of
//! the SentencePiece model, and their -10000 scores would lower the unknown piece's score.

use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::{Precompiled, Replace, Sequence};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, NormalizerWrapper, Tokenizer};

use super::charsmap::check_charsmap;
use crate::weights::{GgufValue, WeightFile};

const MODEL: &str = "tokenizer.ggml.model";
const TOKENS: &str = "tokenizer.ggml.tokens";
const SCORES: &str = "tokenizer.ggml.scores";
const TYPES: &str = "tokenizer.ggml.token_type";
const CHARSMAP: &str = "tokenizer.ggml.precompiled_charsmap";
const ADD_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
const REMOVE_EXTRA_WS: &str = "tokenizer.ggml.remove_extra_whitespaces";
const EOS: &str = "tokenizer.ggml.eos_token_id";
const UNK: &str = "tokenizer.ggml.unknown_token_id";

/// SentencePiece's piece types, as GGUF numbers them.
const NORMAL: u64 = 1;
const UNKNOWN: u64 = 2;
const CONTROL: u64 = 3;
const USER_DEFINED: u64 = 4;
const UNUSED: u64 = 5;
const BYTE: u64 = 6;

/// The metaspace that stands for a space in SentencePiece pieces.
const METASPACE: char = '\u{2581}';

/// Whether the file carries a tokenizer at all (a model name or a vocabulary).
pub(crate) fn has_tokenizer(file: &WeightFile) -> bool {
    file.gguf_value(MODEL).is_some() || file.gguf_value(TOKENS).is_some()
}

/// The tokenizer of a GGUF file's metadata and its end-of-sequence id. Errors are messages
/// about the metadata (the caller names the file).
pub(crate) fn tokenizer_from_gguf(file: &WeightFile) -> Result<(Tokenizer, u32), String> {
    let value = |key: &str| file.gguf_value(key);
    if !has_tokenizer(file) {
        return Err(format!(
            "the GGUF file carries no tokenizer (no {MODEL} or {TOKENS} metadata); pass \
             --tokenizer with the model's tokenizer.json"
        ));
    }
    match value(MODEL).map(|v| v.as_str()) {
        Some(Some("t5")) => {}
        Some(Some(other)) => {
            return Err(format!(
                "{MODEL} is '{other}': only the SentencePiece unigram tokenizer of umT5 ('t5') \
                 is read; pass --tokenizer with the model's tokenizer.json"
            ))
        }
        Some(None) => return Err(format!("{MODEL} is not a string")),
        None => return Err(format!("{TOKENS} is given but not {MODEL}")),
    }
    let tokens = value(TOKENS)
        .and_then(GgufValue::as_array)
        .and_then(|a| a.as_strings())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("{TOKENS} is missing or not a list of strings"))?;
    let n = tokens.len();
    let scores = value(SCORES)
        .and_then(GgufValue::as_array)
        .and_then(|a| a.to_f64s())
        .ok_or_else(|| format!("{SCORES} is missing or not a list of numbers"))?;
    if scores.len() != n {
        return Err(format!("{} scores for {n} tokens", scores.len()));
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(format!("the score of token {i} is {}", scores[i]));
    }
    let types = match value(TYPES) {
        None => vec![NORMAL; n],
        Some(v) => v
            .as_array()
            .and_then(|a| a.to_u64s())
            .ok_or_else(|| format!("{TYPES} is not a list of token types"))?,
    };
    if types.len() != n {
        return Err(format!("{} token types for {n} tokens", types.len()));
    }
    if let Some(i) = types.iter().position(|t| !(NORMAL..=BYTE).contains(t)) {
        return Err(format!(
            "token {i} has the type {}, not one of SentencePiece's (1 to 6)",
            types[i]
        ));
    }
    let id = |key: &str| -> Result<Option<usize>, String> {
        let Some(v) = value(key) else {
            return Ok(None);
        };
        match v.as_u64() {
            Some(id) if id < n as u64 => Ok(Some(id as usize)),
            _ => Err(format!("{key} is {v:?}, not a token id below {n}")),
        }
    };
    let eos = match id(EOS)? {
        Some(eos) => eos,
        None => tokens
            .iter()
            .position(|t| t == "</s>")
            .ok_or_else(|| format!("no {EOS} and no '</s>' token"))?,
    };
    let unk = match id(UNK)? {
        Some(unk) => unk,
        None => types
            .iter()
            .position(|&t| t == UNKNOWN)
            .ok_or_else(|| format!("no {UNK} and no token of the unknown type"))?,
    };
    let flag = |key: &str| -> Result<bool, String> {
        value(key).map_or(Ok(true), |v| {
            v.as_bool()
                .ok_or_else(|| format!("{key} is {v:?}, not a bool"))
        })
    };
    let add_prefix = flag(ADD_PREFIX)?;
    let remove_extra_whitespaces = flag(REMOVE_EXTRA_WS)?;
    let charsmap = match value(CHARSMAP) {
        None => None,
        Some(v) => {
            let bytes = v
                .as_array()
                .and_then(|a| a.as_bytes())
                .ok_or_else(|| format!("{CHARSMAP} is not a list of bytes"))?;
            check_charsmap(bytes).map_err(|e| format!("{CHARSMAP}: {e}"))?;
            Some(Precompiled::from(bytes).map_err(|e| format!("{CHARSMAP}: {e}"))?)
        }
    };

    // The padding after the last piece of the SentencePiece model (never the EOS or unknown).
    let kept = types
        .iter()
        .rposition(|&t| t != UNUSED)
        .map_or(0, |last| last + 1)
        .max(eos + 1)
        .max(unk + 1);
    let vocab: Vec<(String, f64)> = tokens[..kept]
        .iter()
        .cloned()
        .zip(scores[..kept].iter().copied())
        .collect();
    let byte_fallback = types[..kept].contains(&BYTE);
    let model = Unigram::from(vocab, Some(unk), byte_fallback)
        .map_err(|e| format!("cannot build the unigram model: {e}"))?;
    let mut tokenizer = Tokenizer::new(model);

    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if let Some(map) = charsmap {
        normalizers.push(map.into());
    }
    if remove_extra_whitespaces {
        let collapse = Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(" {2,}".into()),
            " ",
        )
        .map_err(|e| format!("the whitespace normalizer: {e}"))?;
        normalizers.push(collapse.into());
    }
    tokenizer
        .with_normalizer(Some(Sequence::new(normalizers)))
        .map_err(|e| format!("the normalizer: {e}"))?;
    let prepend = if add_prefix {
        PrependScheme::Always
    } else {
        PrependScheme::Never
    };
    tokenizer.with_pre_tokenizer(Some(Metaspace::new(METASPACE, prepend, true)));
    tokenizer.with_decoder(Some(Metaspace::new(METASPACE, prepend, true)));
    let eos_token = tokens[eos].clone();
    let template = |t: String| format!("the post-processor's template '{t}' is invalid");
    let mut post = TemplateProcessing::builder();
    let single = format!("$A:0 {eos_token}:0");
    post.try_single(single.clone())
        .map_err(|_| template(single))?;
    let pair = format!("$A:0 {eos_token}:0 $B:0 {eos_token}:0");
    post.try_pair(pair.clone()).map_err(|_| template(pair))?;
    post.special_tokens(vec![(eos_token, eos as u32)]);
    let post = post
        .build()
        .map_err(|e| format!("the post-processor: {e}"))?;
    tokenizer.with_post_processor(Some(post));

    // Control and unknown pieces are special tokens, user-defined pieces are always kept whole,
    // as SentencePiece (and a tokenizer.json's added tokens) treat them.
    let added = |kind: u64, special: bool| -> Vec<AddedToken> {
        tokens[..kept]
            .iter()
            .zip(&types)
            .filter(|(t, &ty)| ty == kind && !t.is_empty())
            .map(|(t, _)| AddedToken::from(t.clone(), special).normalized(false))
            .collect()
    };
    let mut special = added(CONTROL, true);
    special.extend(added(UNKNOWN, true));
    tokenizer
        .add_special_tokens(special)
        .map_err(|e| format!("the special tokens: {e}"))?;
    tokenizer
        .add_tokens(added(USER_DEFINED, false))
        .map_err(|e| format!("the user-defined tokens: {e}"))?;
    Ok((tokenizer, eos as u32))
}
