"""Image builds: how long the daemonless `build_image` takes and how many bytes it uploads, cold
and on the rebuilds a developer makes (nothing changed, one file changed), with and without a
requirements file.

    .venv/bin/python benchmarks/builds.py                      # 5 rounds
    .venv/bin/python benchmarks/builds.py --rounds 10 --output builds.json

Needs a real registry on loopback: Debian's `docker-registry` (`skylane.testing.oci_registry`);
without it the benchmark stops at once with the reason and exit status 2.

Setup: one registry for the whole run; a tiny one-layer base image (`push_test_image`, Docker
media types, `PYTHON_VERSION=3.12.4`); three local pure-Python wheels (`write_wheel`), installed
by pip with `--no-index --find-links DIR` (no network).

Procedure, per round (a new project, target repositories and cache directory each round, so
"cold" is cold; the project's content differs between rounds so nothing is shared with an
earlier round's blobs):
1. `cold`: a project of 8 files (~100 KB of source text) built and pushed to a new repository,
   no requirements;
2. `unchanged`: the same build again (nothing may be uploaded);
3. `one_file_changed`: one file edited, built again (the project layer and the config only);
4. `requirements_cold`: the project with a requirements file naming the three wheels, to a new
   repository with an empty layer cache (pip runs);
5. `requirements_warm`: one file edited, built again with the same cache (the requirements
   layer comes from the cache without pip, and the registry has it already).

Each step's wall time, and the build's own split of it (`resolve_base`, `requirements_layer`,
`project_layer`, the whole `plan`, `push`); the HTTP requests sent to the registry; bytes
uploaded (blobs sent, by kind: a base layer mounted from the base repository counts 0). Times
as median and max over the rounds, requests and bytes as in the last round (and the range of
bytes when rounds differed). Peak RSS of this process (the build runs in it; pip in a
subprocess) from `getrusage`. Everything runs on loopback: a real registry adds its latency
per request and its bandwidth per byte, which the counts let you estimate.

Prints one JSON object (`emit`).
"""

from __future__ import annotations

import argparse
import keyword
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, log, machine

from skylane.images.build import BuildResult, BuildSpec, build_image
from skylane.images.registry import Registries
from skylane.testing.oci_registry import (
    oci_registry,
    push_test_image,
    registry_unavailable_reason,
    write_wheel,
)

STEPS = ("cold", "unchanged", "one_file_changed", "requirements_cold", "requirements_warm")
PROJECT_FILES = 8
FILE_BYTES = 12_500  # 8 x 12.5 KB = 100 KB of source
WHEELS = (("benchlib_alpha", "1.0"), ("benchlib_beta", "2.1"), ("benchlib_gamma", "0.3"))
WORDS = (*keyword.kwlist, "self", "flow", "task", "state", "result", "image", "layer")


def source_text(rng: random.Random, size: int) -> str:
    """Python-looking text of about `size` bytes: compresses like source code does, not like
    random bytes or a repeated line."""
    lines: list[str] = []
    total = 0
    while total < size:
        indent = "    " * rng.randint(0, 2)
        line = indent + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10)))
        line += f"  # {rng.getrandbits(32):08x}"
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines) + "\n"


def make_project(root: Path, seed: int) -> Path:
    rng = random.Random(seed)
    (root / "flows").mkdir(parents=True)
    for i in range(PROJECT_FILES):
        (root / "flows" / f"module_{i}.py").write_text(source_text(rng, FILE_BYTES))
    (root / "requirements.txt").write_text(
        "".join(f"{name}=={version}\n" for name, version in WHEELS)
    )
    return root


def make_wheels(directory: Path) -> Path:
    rng = random.Random(7)
    for name, version in WHEELS:
        modules = {f"{name}/__init__.py": f"VERSION = {version!r}\n"}
        modules.update({f"{name}/part_{i}.py": source_text(rng, 4_000) for i in range(3)})
        write_wheel(directory, name, version, modules, scripts={name: f"{name}:VERSION"})
    return directory


def measure(spec: BuildSpec, registries: Registries, cache_dir: Path) -> dict[str, Any]:
    # Base and target are on the same registry: one client sends every request.
    stats = registries.client(spec.target_reference.registry).stats
    requests_before = stats.requests
    start = time.perf_counter()
    result: BuildResult = build_image(spec, registries=registries, cache_dir=cache_dir)
    seconds = time.perf_counter() - start
    by_kind: dict[str, int] = {}
    for blob in result.uploaded:
        by_kind[blob.kind] = by_kind.get(blob.kind, 0) + blob.size
    return {
        "seconds": seconds,
        "requests": stats.requests - requests_before,
        "steps": dict(result.timings),
        "bytes_uploaded": result.bytes_uploaded,
        "uploaded_by_kind": by_kind,
        "manifest": result.manifest_action,
        "requirements_cached": result.requirements_cached,
        "layers": {kind: layer.size for kind, layer in result.layers.items()},
    }


def one_round(
    registries: Registries, base: str, host: str, wheels: Path, work: Path, i: int
) -> dict[str, dict[str, Any]]:
    project = make_project(work / f"project-{i}", seed=1000 + i)
    cache = work / f"cache-{i}"
    plain = BuildSpec(
        base,
        project,
        target=f"{host}/bench/app-{i}:v1",
        entrypoint=["skylane", "run", "execute"],
        epoch=0,
    )
    with_requirements = BuildSpec(
        base,
        project,
        target=f"{host}/bench/req-{i}:v1",
        requirements=project / "requirements.txt",
        pip_args=["--no-index", "--find-links", str(wheels)],
        entrypoint=["skylane", "run", "execute"],
        epoch=0,
    )
    edited = project / "flows" / "module_0.py"
    out: dict[str, dict[str, Any]] = {}
    out["cold"] = measure(plain, registries, cache)
    out["unchanged"] = measure(plain, registries, cache)
    edited.write_text(edited.read_text() + "# edited\n")
    out["one_file_changed"] = measure(plain, registries, cache)
    out["requirements_cold"] = measure(with_requirements, registries, cache)
    edited.write_text(edited.read_text() + "# edited again\n")
    out["requirements_warm"] = measure(with_requirements, registries, cache)

    # What the figures claim, checked every round.
    assert out["unchanged"]["bytes_uploaded"] == 0, out["unchanged"]
    assert out["unchanged"]["manifest"] == "unchanged"
    assert set(out["one_file_changed"]["uploaded_by_kind"]) == {"project layer", "config"}
    assert not out["requirements_cold"]["requirements_cached"]
    assert out["requirements_warm"]["requirements_cached"]
    assert set(out["requirements_warm"]["uploaded_by_kind"]) == {"project layer", "config"}
    return out


def summary(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in STEPS:
        samples = [r[name] for r in rounds]
        seconds = [s["seconds"] for s in samples]
        step_names = list(samples[-1]["steps"])
        uploaded = [s["bytes_uploaded"] for s in samples]
        entry: dict[str, Any] = {
            "median_ms": round(1000 * statistics.median(seconds), 1),
            "max_ms": round(1000 * max(seconds), 1),
            "steps_median_ms": {
                step: round(1000 * statistics.median(s["steps"].get(step, 0.0) for s in samples), 1)
                for step in step_names
            },
            "registry_requests": samples[-1]["requests"],
            "bytes_uploaded": uploaded[-1],
            "uploaded_by_kind": samples[-1]["uploaded_by_kind"],
            "layer_bytes": samples[-1]["layers"],
            "manifest": samples[-1]["manifest"],
            "requirements_cached": samples[-1]["requirements_cached"],
        }
        if min(uploaded) != max(uploaded):
            entry["bytes_uploaded_range"] = [min(uploaded), max(uploaded)]
        out[name] = entry
    return out


def peak_rss_mib() -> float:
    """Peak RSS of this process (ru_maxrss, KiB on Linux). Not pip's: a child's ru_maxrss on
    Linux starts from the parent's RSS at fork (it survives exec), so it would not tell."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", "--out", dest="output", help="also write the JSON here")
    args = parser.parse_args(argv)
    reason = registry_unavailable_reason()
    if reason:
        log(f"builds: cannot run: {reason}")
        return 2

    result: dict[str, Any] = {
        "benchmark": "builds",
        "machine": machine(),
        "rounds": args.rounds,
        "project": {"files": PROJECT_FILES, "source_bytes": PROJECT_FILES * FILE_BYTES},
        "requirements": {"wheels": len(WHEELS), "pip_args": "--no-index --find-links DIR"},
    }
    with (
        tempfile.TemporaryDirectory(prefix="skylane-bench-builds-") as tmp,
        oci_registry() as registry,
        Registries(docker_config=False) as registries,
    ):
        work = Path(tmp)
        push_test_image(registries.client(registry.host), "bench/base", "1")
        base = f"{registry.host}/bench/base:1"
        wheels = make_wheels(work / "wheels")
        rounds = []
        for i in range(args.rounds):
            log(f"builds: round {i + 1}/{args.rounds}")
            rounds.append(one_round(registries, base, registry.host, wheels, work, i))
        result["steps"] = summary(rounds)
        result["peak_rss_mib"] = peak_rss_mib()
    emit(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
