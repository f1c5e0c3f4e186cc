"""Everything fan-convert knows about Hugging Face ``transformers`` video classifiers, in one place:
building them as ``hf:NAME`` specs and reading their configs (:mod:`.models`), reading their
``save_pretrained`` folders (:mod:`.pretrained_folder`), and the rules that find and convert their
fixed-T sites (:mod:`.rules`), registered with the rule table here.
Importing this package does not import ``transformers``."""

from ...surgery.rules import register_integration
from .models import (
    MissingExtraError,
    build_hf,
    config_fields,
    frame_size,
    hf_config,
    is_hf_video_model,
    read_config_file,
    reader_settings,
    video_classifiers,
    video_input_name,
)
from .pretrained_folder import is_pretrained_folder, read_pretrained_folder
from .rules import HF_RULES, plan_defaults, recorded_frames

__all__ = [
    "MissingExtraError", "build_hf", "config_fields", "frame_size", "hf_config", "is_hf_video_model", "read_config_file",
    "reader_settings", "video_classifiers", "video_input_name", "HF_RULES", "plan_defaults",
    "recorded_frames", "is_pretrained_folder", "read_pretrained_folder",
]

register_integration(HF_RULES, plan_defaults)
