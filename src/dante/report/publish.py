"""`dante push` (after the report): the trained student, with its model card, to a Hugging Face
model repo, and the teacher cache, exported as a dataset (``dante cache export``), to a dataset
repo, through ``huggingface_hub``.

The token comes from the environment (``HF_TOKEN``, or huggingface_hub's own login), is never
printed or written, and is scrubbed from any error message. ``HF_ENDPOINT`` points the upload at
another Hub (the tests use a local server). Checkpoints stay local.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dante.cache.export import export_cache
from dante.errors import DanteError
from dante.layout import ADAPTER_CONFIG, CHECKPOINTS, MERGED, STUDENT_MANIFEST

IGNORE = [f"{CHECKPOINTS}/*", f"{CHECKPOINTS}/**", ".*"]


@dataclass
class PushSummary:
    model_url: str | None
    dataset_url: str | None

    def __str__(self) -> str:
        parts = [f"model: {self.model_url}"] if self.model_url else []
        parts += [f"dataset: {self.dataset_url}"] if self.dataset_url else []
        return "pushed " + ", ".join(parts)


def _scrub(text: str) -> str:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    return text.replace(token, "***") if token else text


def push_to_hub(
    student_dir: str | Path | None,
    repo_id: str | None,
    *,
    cache_dir: str | Path | None = None,
    dataset_repo_id: str | None = None,
    private: bool = False,
    merged: bool = False,
) -> PushSummary:
    """Upload the student folder to ``repo_id`` and/or the exported cache to ``dataset_repo_id``.

    A LoRA student's folder is peft's adapter folder: pushed as such (its ``merged/`` model left
    out), or with ``merged`` the merged model (``<student>/merged``) alone, a plain transformers repo.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    model_url = dataset_url = None
    try:
        if repo_id:
            student = Path(student_dir) if student_dir else None
            if student is None or not (student / STUDENT_MANIFEST).is_file():
                raise DanteError(
                    "no trained student to push", file=student, hint="run `dante train` first (and `dante report`)"
                )
            lora = (student / ADAPTER_CONFIG).is_file()
            if merged:
                if not lora or not (student / MERGED / "config.json").is_file():
                    raise DanteError(
                        "no merged LoRA model to push",
                        file=student / MERGED,
                        hint="--merged is for a LoRA student trained with student.peft.save_merged=true",
                    )
                student = student / MERGED
            if not (student / "README.md").is_file():
                raise DanteError(
                    "the student folder has no model card", file=student, hint="run `dante report RUN_DIR` first"
                )
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id,
                repo_type="model",
                folder_path=str(student),
                ignore_patterns=IGNORE + ([f"{MERGED}/*", f"{MERGED}/**"] if lora and not merged else []),
                commit_message="dante: distilled student",
            )
            model_url = str(getattr(info, "commit_url", info))
        if dataset_repo_id:
            if cache_dir is None:
                raise DanteError("no cache to push", field="cache.dir")

            with tempfile.TemporaryDirectory(prefix="dante-export-") as tmp:
                export_cache(cache_dir, Path(tmp) / "dataset")
                api.create_repo(dataset_repo_id, repo_type="dataset", private=private, exist_ok=True)
                info = api.upload_folder(
                    repo_id=dataset_repo_id,
                    repo_type="dataset",
                    folder_path=str(Path(tmp) / "dataset"),
                    commit_message="dante: teacher cache",
                )
                dataset_url = str(getattr(info, "commit_url", info))
    except HfHubHTTPError as exc:
        raise DanteError(
            f"the Hub refused the upload: {_scrub(str(exc))[:300]}",
            field="HF_TOKEN",
            hint="check HF_TOKEN (a write token) and the repo id",
        ) from None
    return PushSummary(model_url, dataset_url)
