"""glide_edu — the library behind the glide-edu book: diffusion models up to OpenAI's GLIDE."""

from glide_edu.profiles import Profile, by_profile, current_profile, is_fast

__version__ = "0.1.0"

__all__ = ["Profile", "by_profile", "current_profile", "is_fast", "__version__"]
