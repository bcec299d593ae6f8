//! Wan2.1's text encoder: the umT5-XXL encoder and its tokenizer.
//!
//! - [`PromptTokenizer`]: `tokenizer.json` (Unigram) through the pure-Rust `tokenizers` crate,
//!   after the reference's prompt clean-up ([`clean_prompt`]); EOS appended, at most 512 ids.
//! - [`UmT5Encoder`]: the encoder on the GPU, from the HF / diffusers `text_encoder/` layout,
//!   ComfyUI's single file or the original `.pth`; `encode` gives the [512, 4096] f32 context
//!   the DiT takes, and `free` releases the GPU memory before the DiT is loaded.

mod charsmap;
mod clean;
mod encoder;
mod gguf_tokenizer;
mod tokenizer;
mod weights;

pub use clean::{clean_prompt, collapse_whitespace, fix_text, unescape_html};
pub use encoder::{relative_position_bucket, Residency, UmT5Encoder};
pub use tokenizer::{PromptTokenizer, TEXT_LEN};
pub use weights::{T5Config, ORIGINAL_FILE};
