"""GPU JPEG decoding (nvJPEG by TorchCodec or torchvision) against the package's CPU decoder: speed, pixels, scores.

Inputs: JPEGs generated at --size (photo-like content from score_e2e.make_photos, re-encoded) in the chroma
subsamplings 4:2:0, 4:2:2 and 4:4:4 at each of --qualities, plus the real JPEGs of the repository (examples/*.jpg,
and any under shared/data beside the checkout) or --photos.

Decoders:
- cpu: the loader the Scorer uses (`engine.scoring.decode_input`: PIL, EXIF orientation, colour profile, RGB);
- gpu: the first of TorchCodec's `torchcodec.decoders.decode_jpeg` and torchvision's `torchvision.io.decode_jpeg`
  (--decoder picks one) that imports and decodes a probe image on --device, called with a list of encoded images
  (one batched nvJPEG call on CUDA). With --device cpu (a smoke run on a machine without a GPU) the same libraries
  decode on the CPU, or, when neither loads, a stand-in (PIL by another route, labelled `stand_in` in the JSON)
  takes their place so that every code path runs. --decoder stand-in forces it.

Reported (progress on stderr, one JSON line at the end of stdout):
- decode images/s per subsampling (at the first of --qualities): cpu single process (`decode_input` of a path, the
  file read included), gpu batched at each of --batch-sizes (the file read, the copy of the encoded bytes to the
  device and the decode, the device synchronised after each round), median of --rounds rounds;
- pixel differences gpu against cpu, per subsampling (all qualities) and per subsampling and quality, and for the
  real photos: max abs, mean abs and the fraction of differing values, over all values of the images;
- score differences: the same model scoring the cpu-decoded and the gpu-decoded images, each a (3, H, W) uint8
  tensor given to `model.score` (which divides by 255 as `image_to_tensor` does for a decoded file: the cpu side
  scores exactly as its file would), with a centre crop and with 10 crops: `10_crops` places each side's crops as
  the Scorer would (seeded by --seed and the image's own pixels, so pixels that differ move the crops too) and
  `10_crops_same_boxes` crops both sides at the cpu image's boxes (the decoder's difference alone).
Without a gpu decoder (none imports, or the probe fails) the JSON says why in `gpu_decoder_error` and still gives
the cpu figures.

The model is built as benchmarks/throughput.py builds it: a registered name without trained weights (the default
gamma-vit-b16) with random weights and its experts, routers and scales perturbed; a registered name with installed
weights (gamma-lite) or a checkpoint path is loaded as is. Scores are in fp32 unless --dtype says otherwise.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image, features
from score_e2e import make_photos, timed  # sibling scripts: benchmarks/ is on the path when run
from throughput import build, check_model, positive, positive_list

import gamma_iqa
from gamma_iqa.data.transforms import content_seed, image_to_uint8, make_crops
from gamma_iqa.engine.runtime import resolve_device
from gamma_iqa.engine.scoring import Scorer, decode_input
from gamma_iqa.models.factory import trained_weights

ROOT = Path(__file__).resolve().parents[1]
SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}  # PIL's `subsampling` save option


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Decoder:
    """A batched JPEG decoder: a list of 1-D uint8 tensors of encoded bytes (on the CPU) -> (3, H, W) uint8 RGB."""

    name: str
    version: str
    device: torch.device
    decode: Callable[[list[torch.Tensor]], list[torch.Tensor]]
    stand_in: bool = False

    def info(self) -> dict:
        return {"name": self.name, "version": self.version, "device": str(self.device), "stand_in": self.stand_in}


def _torchcodec(device: torch.device) -> Decoder:
    import torchcodec
    from torchcodec.decoders import decode_jpeg

    return Decoder(
        "torchcodec.decoders.decode_jpeg",
        torchcodec.__version__,
        device,
        lambda data: decode_jpeg(data, mode="RGB", device=device),
    )


def _torchvision(device: torch.device) -> Decoder:
    import torchvision
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(data: list[torch.Tensor]) -> list[torch.Tensor]:
        with warnings.catch_warnings():  # its image decoding is deprecated in favour of TorchCodec's
            warnings.simplefilter("ignore")
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)

    return Decoder("torchvision.io.decode_jpeg", torchvision.__version__, device, decode)


def _stand_in(device: torch.device) -> Decoder:
    def decode(data: list[torch.Tensor]) -> list[torch.Tensor]:
        return [image_to_uint8(Image.open(io.BytesIO(d.numpy().tobytes())).convert("RGB")).to(device) for d in data]

    name = "stand-in: PIL Image.open(bytes).convert('RGB'), not a GPU decoder (no GPU decoder loads here)"
    return Decoder(name, PIL.__version__, device, decode, stand_in=True)


LIBRARIES = {"torchcodec": _torchcodec, "torchvision": _torchvision, "stand-in": _stand_in}


def _probe_bytes() -> torch.Tensor:
    buf = io.BytesIO()
    Image.new("RGB", (32, 16), (200, 100, 50)).save(buf, format="JPEG", quality=90)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def find_decoder(device: torch.device, prefer: str) -> tuple[Decoder | None, dict[str, str]]:
    """The first decoder that imports and decodes a probe image on `device`, and why each one tried before failed.

    `prefer` "auto" tries torchcodec, then torchvision, then (on the CPU only) the stand-in.
    """
    order = [prefer] if prefer != "auto" else ["torchcodec", "torchvision"] + (["stand-in"] * (device.type == "cpu"))
    errors: dict[str, str] = {}
    for name in order:
        try:
            decoder = LIBRARIES[name](device)
            out = decoder.decode([_probe_bytes()])
            if len(out) != 1 or tuple(out[0].shape) != (3, 16, 32) or out[0].dtype != torch.uint8:
                raise RuntimeError(f"probe decoded to {[(tuple(o.shape), o.dtype) for o in out]}")
            return decoder, errors
        except Exception as e:  # an ImportError, a library linked against another torch, no nvJPEG, ...
            errors[name] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
            log(f"decoder {name} unavailable: {errors[name]}")
    return None, errors


def make_inputs(folder: Path, size: tuple[int, int], qualities: list[int], distinct: int) -> dict:
    """{(subsampling, quality): `distinct` JPEG paths}: make_photos' images re-encoded in each of them."""
    base = folder / "base"
    base.mkdir()
    make_photos(base, distinct, *size)
    kinds: dict[tuple[str, int], list[Path]] = {}
    for name, code in SUBSAMPLING.items():
        for q in qualities:
            out = folder / f"{name.replace(':', '')}_q{q}"
            out.mkdir()
            kinds[(name, q)] = []
            for src in sorted(base.glob("*.jpg")):
                with Image.open(src) as im:
                    im.save(out / src.name, quality=q, subsampling=code)
                kinds[(name, q)].append(out / src.name)
    return kinds


def real_photos(given: list[str] | None) -> list[Path]:
    if given:
        return [Path(p) for p in given]
    found = sorted((ROOT / "examples").glob("*.jp*g"))
    shared = ROOT.parent / "shared" / "data"
    if shared.is_dir():
        found += sorted(p for p in shared.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[:16]
    return found


def encoded(path: Path) -> torch.Tensor:
    """The file's bytes as a 1-D uint8 tensor on the CPU (one read, no copy)."""
    return torch.from_numpy(np.fromfile(path, dtype=np.uint8))


def median_rate(fn: Callable[[], None], images: int, rounds: int, device: torch.device) -> float:
    """images / the median seconds of `fn()` over `rounds` rounds, after one untimed round; synchronised."""
    return images / timed(fn, device, rounds)


def decode_rates(decoder: Decoder | None, paths: list[Path], batches: list[int], rounds: int) -> dict:
    """cpu images/s (decode_input of each path, one process) and gpu images/s at each batch size."""

    def cpu() -> None:
        for p in paths:
            decode_input(p)

    out: dict = {"cpu": round(median_rate(cpu, len(paths), rounds, torch.device("cpu")), 2)}
    if decoder is None:
        return out

    def gpu(batch: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(0, len(paths), batch):
                decoder.decode([encoded(p) for p in paths[i : i + batch]])

        return run

    out["gpu"] = {str(b): round(median_rate(gpu(b), len(paths), rounds, decoder.device), 2) for b in batches}
    out["gpu_best_over_cpu"] = round(max(out["gpu"].values()) / out["cpu"], 2)
    return out


def pixel_stats(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """max abs, mean abs and fraction of differing values of gpu against cpu uint8 pixels, over all the pairs."""
    total = differing = 0
    abs_sum, worst = 0.0, 0
    for cpu, gpu in pairs:
        d = (cpu.int() - gpu.int()).abs()
        total += d.numel()
        differing += int((d > 0).sum())
        abs_sum += float(d.sum(dtype=torch.float64))
        worst = max(worst, int(d.max()))
    return {
        "max_abs": worst,
        "mean_abs": round(abs_sum / total, 6),
        "frac_differing": round(differing / total, 6),
        "images": len(pairs),
    }


def decode_pair(decoder: Decoder, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(cpu, gpu) pixels of one file, (3, H, W) uint8 on the CPU.

    Raises:
        ValueError: the two decoders give different sizes (an EXIF rotation the gpu decoder does not apply, say).
    """
    cpu = image_to_uint8(decode_input(path))
    gpu = decoder.decode([encoded(path)])[0].cpu()
    if cpu.shape != gpu.shape:
        raise ValueError(f"{path.name}: cpu {tuple(cpu.shape)} but gpu {tuple(gpu.shape)}")
    return cpu, gpu


def diff_stats(a: list[float], b: list[float]) -> dict:
    d = [abs(x - y) for x, y in zip(a, b, strict=True)]
    return {"max_abs": max(d), "mean_abs": sum(d) / len(d)}


def same_box_scores(scorer: Scorer, images: list[torch.Tensor], boxes_from: list[torch.Tensor]) -> list[float]:
    """Mean scores of 10 crops of each image at the boxes the Scorer would place in the matching `boxes_from` image."""
    size = scorer.model.image_size
    items = []
    for image, source in zip(images, boxes_from, strict=True):
        unit = image.float().div(255)  # as image_to_tensor and model.score divide uint8 pixels
        generator = torch.Generator().manual_seed(content_seed(source.float().div(255), scorer.seed))
        items.append(({"crops": make_crops(unit, 10, size, generator=generator).crops}, None))
    scores: list[float] = []
    for i in range(0, len(items), scorer.per_forward):  # the engine's fixed-size forwards
        scores += [mean for mean, _, _ in scorer.score_items(items[i : i + scorer.per_forward])]
    return scores


def score_diffs(model, pairs: list[tuple[torch.Tensor, torch.Tensor]], seed: int, dtype: str) -> dict:
    cpu = [c for c, _ in pairs]
    gpu = [g for _, g in pairs]
    out: dict = {"images": len(pairs)}
    own: dict[str, list[float]] = {}
    for name, crops in (("center", "center"), ("10_crops", 10)):
        a = model.score(cpu, crops=crops, seed=seed, dtype=dtype)
        b = model.score(gpu, crops=crops, seed=seed, dtype=dtype)
        out[name] = diff_stats(a, b)
        own[name] = a
    scorer = Scorer(model, crops=10, seed=seed, dtype=dtype)
    a = same_box_scores(scorer, cpu, cpu)
    b = same_box_scores(scorer, gpu, cpu)
    out["10_crops_same_boxes"] = diff_stats(a, b)
    # The cpu side's crops at its own boxes are those model.score placed: the same scores, or the plumbing is wrong.
    out["same_boxes_cpu_equals_score"] = a == own["10_crops"]
    out["crops_moved"] = sum(not torch.equal(c, g) for c, g in pairs)  # differing pixels reseed the random crops
    out["score_range"] = [float(v) for v in model.score_range]
    out["score_spread_cpu_10_crops"] = max(own["10_crops"]) - min(own["10_crops"])
    return out


def load_model(name: str, device: torch.device, seed: int) -> tuple[gamma_iqa.QualityModel, str]:
    if name in gamma_iqa.list_models() and trained_weights(name) is not None:
        return gamma_iqa.create_model(name).to(device), "trained weights"
    if name in gamma_iqa.list_models():
        return build(name, device, seed), "random weights, experts perturbed (as throughput.py)"
    return gamma_iqa.create_model(name).to(device), "checkpoint"


def image_size(text: str) -> tuple[int, int]:
    """An argparse type: "WIDTHxHEIGHT", each side a whole number from 16 to 8192 -> (width, height)."""
    sides = text.lower().split("x")
    if len(sides) != 2 or not all(v.isascii() and v.isdigit() and 16 <= int(v) <= 8192 for v in sides):
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT with sides from 16 to 8192, got {text!r}")
    return int(sides[0]), int(sides[1])


def qualities(text: str) -> list[int]:
    """An argparse type: comma-separated JPEG qualities from 1 to 100."""
    values = positive_list(text)
    if max(values) > 100:
        raise argparse.ArgumentTypeError(f"JPEG qualities run from 1 to 100, got {text!r}")
    return values


def jpeg_file(text: str) -> Path:
    """An argparse type: an existing file (the decoders say later whether it is a JPEG they take)."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return Path(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="cuda (the measurement), cpu (a smoke run) or auto")
    p.add_argument("--decoder", choices=["auto", *LIBRARIES], default="auto", help="the gpu-side decoder")
    p.add_argument("--model", default="gamma-vit-b16", help="registered name or checkpoint path")
    p.add_argument("--dtype", default="fp32", help="scoring precision (fp32: the decoders' difference alone)")
    p.add_argument("--size", type=image_size, default=(1024, 768), help="WIDTHxHEIGHT of the generated JPEGs")
    p.add_argument("--qualities", type=qualities, default=[90, 75, 95], help="JPEG qualities; the first one is timed")
    p.add_argument("--distinct", type=positive, default=None, help="distinct images per kind (default: 4 cuda, 1 cpu)")
    p.add_argument("--speed-images", type=positive, default=None, help="images per round (default: 128 cuda, 4 cpu)")
    p.add_argument("--batch-sizes", type=positive_list, default=None, help="gpu batches (default: 1,8,32,128; 1,2 cpu)")
    p.add_argument("--rounds", type=positive, default=3, help="timed rounds (median)")
    p.add_argument("--photos", type=jpeg_file, nargs="*", help="real JPEGs (default: examples/*.jpg, shared/data's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    check_model(p, args.model)
    try:
        cuda = resolve_device(args.device).type == "cuda"
    except ValueError as e:  # --device cuda without one, or a device name torch does not know
        p.error(f"--device {args.device}: {e}")
    args.distinct = args.distinct or (4 if cuda else 1)
    args.speed_images = args.speed_images or (128 if cuda else 4)
    args.batch_sizes = args.batch_sizes or ([1, 8, 32, 128] if cuda else [1, 2])
    return args


def measure(args: argparse.Namespace, device: torch.device, tmp: Path) -> dict:
    qualities, batches = args.qualities, args.batch_sizes
    decoder, errors = find_decoder(device, args.decoder)
    result: dict = {"gpu_decoder": None if decoder is None else decoder.info()}
    if errors:
        result["gpu_decoder_error" if decoder is None else "decoders_skipped"] = errors
    log(f"generating {args.distinct} images per kind at {args.size[0]}x{args.size[1]} ...")
    kinds = make_inputs(tmp, args.size, qualities, args.distinct)
    rates = {}
    for name in SUBSAMPLING:
        paths = kinds[(name, qualities[0])]
        log(f"timing {name} q{qualities[0]} ...")
        timed = [paths[i % len(paths)] for i in range(args.speed_images)]  # the distinct files, cycled
        rates[name] = decode_rates(decoder, timed, batches, args.rounds)
    result["decode_images_per_s"] = rates
    if decoder is None:
        return result
    log("comparing pixels ...")
    pairs = {kind: [decode_pair(decoder, p) for p in paths] for kind, paths in kinds.items()}
    real = real_photos(args.photos)
    pairs[("real", 0)] = []
    for path in real:
        try:
            pairs[("real", 0)].append(decode_pair(decoder, path))
        except Exception as e:  # a real photo the gpu decoder refuses (progressive, CMYK...) is reported, not fatal
            result.setdefault("real_errors", {})[path.name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    result["real_photos"] = [p.name for p in real]
    groups = [*SUBSAMPLING, "real"]
    result["pixels"] = {g: pixel_stats([x for (s, _), ps in pairs.items() if s == g for x in ps]) for g in groups}
    result["pixels"] = {g: v for g, v in result["pixels"].items() if v["images"]}
    result["pixels_by_quality"] = {f"{s} q{q}": pixel_stats(ps) for (s, q), ps in pairs.items() if s != "real"}
    log(f"scoring with {args.model} ...")
    model, weights = load_model(args.model, device, args.seed)
    result["model_weights"] = weights
    result["scores"] = score_diffs(model, [x for ps in pairs.values() for x in ps], args.seed, args.dtype)
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args, device, Path(tmp))
    turbo = features.version_feature("libjpeg_turbo")
    result |= {
        "cpu_decoder": f"gamma_iqa decode_input: PIL {PIL.__version__}, libjpeg-turbo {turbo}",
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": args.model,
        "dtype": args.dtype,
        "size": f"{args.size[0]}x{args.size[1]}",
        "qualities": args.qualities,
        "speed_images": args.speed_images,
        "rounds": args.rounds,
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timing": "images / median seconds of a round; gpu: file read, bytes to the device, decode, synchronised",
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
