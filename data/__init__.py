"""The files the book ships (installed as the package ``glide_edu.assets``; see ``glide_edu.fileio``)."""
