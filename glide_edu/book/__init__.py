"""Code that only one chapter uses: glide_edu.book.chNN for chapter NN (see docs/architecture.md)."""
