"""Text helpers: tokenizers and reading line-oriented text files."""
