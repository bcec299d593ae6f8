//! The umT5 tokenizer: a `tokenizer.json` (SentencePiece Unigram, as google/umt5-xxl ships it),
//! or the same tokenizer in a GGUF text encoder's metadata (`gguf_tokenizer`), run by the pure-Rust
//! `tokenizers` crate after the reference's clean-up ([`clean_prompt`]).

use std::path::{Path, PathBuf};

use super::charsmap::check_normalizer;
use super::clean::clean_prompt;
use super::gguf_tokenizer::tokenizer_from_gguf;
use crate::error::{input_err, Result};
use crate::weights::{FileFormat, WeightFile};

/// Tokens per prompt, EOS included: longer prompts are truncated, as in the reference.
pub const TEXT_LEN: usize = 512;

/// A loaded tokenizer and its end-of-sequence id.
pub struct PromptTokenizer {
    inner: tokenizers::Tokenizer,
    eos: u32,
    path: PathBuf,
}

impl std::fmt::Debug for PromptTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PromptTokenizer({})", self.path.display())
    }
}

impl PromptTokenizer {
    /// Reads a `tokenizer.json`, or the one in a folder, or the tokenizer in a GGUF file's
    /// metadata.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join("tokenizer.json");
        }
        let what = path.display().to_string();
        let is_gguf = std::fs::File::open(&path).is_ok_and(|mut f| {
            let mut magic = [0u8; 4];
            std::io::Read::read_exact(&mut f, &mut magic).is_ok() && &magic == b"GGUF"
        });
        if is_gguf {
            return Self::from_gguf(&WeightFile::open(&path)?);
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| input_err(&what, format!("cannot read the tokenizer: {e}")))?;
        check_normalizer_of(&text).map_err(|e| input_err(&what, e))?;
        let inner: tokenizers::Tokenizer = text
            .parse()
            .map_err(|e| input_err(&what, format!("cannot read the tokenizer: {e}")))?;
        let eos = inner
            .token_to_id("</s>")
            .ok_or_else(|| input_err(&what, "the tokenizer has no '</s>' token"))?;
        Ok(Self { inner, eos, path })
    }

    /// The tokenizer in the metadata of a GGUF text encoder (see `gguf_tokenizer`); an error
    /// naming the file when it carries none or a malformed one.
    pub fn from_gguf(file: &WeightFile) -> Result<Self> {
        let what = file.path().display().to_string();
        if file.format() != FileFormat::Gguf {
            return Err(input_err(&what, "not a GGUF file: it carries no tokenizer"));
        }
        let (inner, eos) = tokenizer_from_gguf(file)
            .map_err(|e| input_err(&what, format!("the tokenizer in its metadata: {e}")))?;
        Ok(Self {
            inner,
            eos,
            path: file.path().to_path_buf(),
        })
    }

    /// Finds the tokenizer of a model given as the path of its weights: `tokenizer.json` beside
    /// the weights or in the folder, `tokenizer/` of a diffusers checkpoint (or of the folder
    /// above `text_encoder/`), and `google/umt5-xxl/` of a Wan2.1 checkpoint.
    pub fn find(model: &Path) -> Result<PathBuf> {
        let folder = if model.is_dir() {
            model.to_path_buf()
        } else {
            model.parent().unwrap_or(Path::new(".")).to_path_buf()
        };
        let mut candidates = vec![
            folder.join("tokenizer.json"),
            folder.join("tokenizer/tokenizer.json"),
            folder.join("google/umt5-xxl/tokenizer.json"),
        ];
        if let Some(up) = folder.parent() {
            candidates.push(up.join("tokenizer/tokenizer.json"));
            candidates.push(up.join("google/umt5-xxl/tokenizer.json"));
        }
        candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
            input_err(
                model.display().to_string(),
                "no tokenizer.json found beside the text encoder (looked in the folder, \
                 tokenizer/ and google/umt5-xxl/, here and one level up); pass --tokenizer",
            )
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// Pieces in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The ids of a prompt: cleaned, tokenized, truncated to `TEXT_LEN - 1` tokens, EOS appended.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        let cleaned = clean_prompt(prompt);
        let encoding = self.inner.encode(cleaned.as_str(), false).map_err(|e| {
            input_err(
                self.path.display().to_string(),
                format!("tokenizing the prompt: {e}"),
            )
        })?;
        let mut ids: Vec<u32> = encoding.get_ids().to_vec();
        ids.truncate(TEXT_LEN - 1);
        ids.push(self.eos);
        Ok(ids)
    }
}

/// Checks a tokenizer.json before the `tokenizers` crate reads it: that crate panics on some
/// malformed JSON (a decoder or normalizer cut short) and trusts a `Precompiled` normalizer's
/// character map (see `charsmap`). Only the syntax and the normalizer are looked at here.
fn check_normalizer_of(text: &str) -> std::result::Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(default)]
        normalizer: serde_json::Value,
    }
    let head: Head = serde_json::from_str(text)
        .map_err(|e| format!("cannot read the tokenizer: not valid JSON: {e}"))?;
    check_normalizer(&head.normalizer)
        .map_err(|e| format!("cannot read the tokenizer's normalizer: {e}"))
}
