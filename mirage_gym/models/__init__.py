"""World models: the embedded RGB-D codec + VACE-conditioned generator + sampler, the
Wan2.2 backbone with the Mirage add-on, and ``load_backend`` that picks one for the world."""

from mirage_gym.models.backend import LatentWorldModel, ModelLoadError, load_backend, shipped_model_path
from mirage_gym.models.wan import WanWorldModel

__all__ = ["LatentWorldModel", "ModelLoadError", "WanWorldModel", "load_backend", "shipped_model_path"]
