"""docker-compose.yml and Dockerfile: shape checks (no Docker daemon here).

What `docker compose up --build` needs from this repository: a `radiusd` service built
from the Dockerfile, the config mounted read-only (a missing file an error, not a new
directory) and the data on a volume, 1812/udp, 1813/udp and the HTTP port published, a
restart policy that gives up on a config error, TZ settable; a Dockerfile whose COPY
sources exist and are not hidden by .dockerignore, and whose entry point checks the
config and execs the `radiusd` console script. tests/test_docker.py builds and runs it.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


# -- helpers ---------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return out


def instruction(name: str) -> list[str]:
    return [args for word, args in dockerfile_instructions() if word == name]


def copy_sources() -> list[str]:
    """Build-context paths the Dockerfile COPYs (not COPY --from=<stage>)."""
    sources: list[str] = []
    for args in instruction("COPY") + instruction("ADD"):
        parts = json.loads(args) if args.startswith("[") else shlex.split(args)
        if any(p.startswith("--from=") for p in parts):
            continue
        parts = [p for p in parts if not p.startswith("--")]
        assert len(parts) >= 2, f"COPY needs a source and a destination: {args!r}"
        sources += parts[:-1]
    return sources


def ignored(path: str) -> bool:
    """A simplified .dockerignore match (enough for top-level patterns and `!`)."""
    if not DOCKERIGNORE.exists():
        return False
    path = path.rstrip("/")
    result = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if pattern.startswith("**/"):
            hit = fnmatch.fnmatch(Path(path).name, pattern[3:])
        else:
            hit = fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/")
        if hit:
            result = not negate
    return result


def port_specs(ports: list[object]) -> set[str]:
    """Normalise short ("1812:1812/udp") and long ({target, published, protocol}) forms."""
    out: set[str] = set()
    for p in ports:
        if isinstance(p, dict):
            proto = p.get("protocol", "tcp")
            out.add(f"{p.get('published')}:{p['target']}/{proto}")
        else:
            spec = str(p)
            if "/" not in spec:
                spec += "/tcp"
            # drop a host IP prefix such as "0.0.0.0:1812:1812/udp"
            parts = spec.split(":")
            out.add(":".join(parts[-2:]))
    return out


@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE.is_file(), "docker-compose.yml is missing"
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def service(compose: dict) -> dict:
    assert "radiusd" in compose.get("services", {}), "no `radiusd` service"
    return compose["services"]["radiusd"]


# -- docker-compose.yml ------------------------------------------------------------------


def test_service_is_built_from_the_dockerfile(service: dict) -> None:
    build = service["build"]
    if isinstance(build, str):
        context, dockerfile = build, "Dockerfile"
    else:
        context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
    assert (ROOT / context / dockerfile).resolve() == DOCKERFILE


def test_radius_and_http_ports_published(service: dict) -> None:
    specs = port_specs(service["ports"])
    assert "1812:1812/udp" in specs
    assert "1813:1813/udp" in specs
    assert "8080:8080/tcp" in specs  # portal, API, /healthz
    exposed = " ".join(instruction("EXPOSE")).split()
    assert {s.split(":")[-1] for s in specs} == set(exposed)


def test_config_mounted_read_only_and_data_on_a_volume(compose: dict, service: dict) -> None:
    volumes = [str(v) if not isinstance(v, dict) else f"{v['source']}:{v['target']}"
               + (":ro" if v.get("read_only") else "") for v in service["volumes"]]
    assert "./radiusd.toml:/etc/radiusd/radiusd.toml:ro" in volumes
    (config,) = [v for v in service["volumes"] if isinstance(v, dict)]
    assert config["bind"]["create_host_path"] is False  # missing: an error, not a directory
    data = [v for v in volumes if v.split(":")[1] == "/data"]
    assert data, "no volume for /data (the SQLite database)"
    name = data[0].split(":")[0]
    if not name.startswith((".", "/")):  # a named volume must be declared
        assert name in (compose.get("volumes") or {}), f"named volume {name!r} not declared"


def test_config_path_matches_the_dockerfile_cmd(service: dict) -> None:
    cmd = json.loads(instruction("CMD")[-1])
    config = cmd[cmd.index("-c") + 1]
    targets = [v["target"] if isinstance(v, dict) else str(v).split(":")[1]
               for v in service["volumes"]]
    assert config in targets, f"CMD reads {config}, which no volume provides"


def test_restart_gives_up_on_a_config_error_and_stops_gracefully(service: dict) -> None:
    m = re.fullmatch(r"on-failure:(\d+)", service["restart"])
    assert m and 1 <= int(m.group(1)) <= 10, "a config error must not restart forever"
    assert "exit 78" in (ROOT / "docker" / "entrypoint.sh").read_text()
    assert service.get("stop_signal", "SIGTERM") == "SIGTERM"
    grace = str(service.get("stop_grace_period", "10s"))
    m = re.fullmatch(r"(\d+)s", grace)
    assert m and int(m.group(1)) >= 10, "give in-flight requests and the store time to flush"


# -- Dockerfile ------------------------------------------------------------------------


def test_time_zone_is_settable(service: dict) -> None:
    assert service["environment"]["TZ"].startswith("${TZ")
    assert "TZ=UTC" in " ".join(instruction("ENV"))
    assert "tzdata" in " ".join(instruction("RUN"))


def test_dockerfile_base_expose_entrypoint_cmd() -> None:
    assert instruction("ARG")[0] == "BASE=python:3.11-slim"  # tests pass another BASE
    assert instruction("FROM")[0] == "${BASE}"
    exposed = " ".join(instruction("EXPOSE")).split()
    assert "1812/udp" in exposed and "1813/udp" in exposed and "8080/tcp" in exposed
    assert json.loads(instruction("ENTRYPOINT")[-1]) == ["radiusd-entrypoint"]
    entrypoint = (ROOT / "docker" / "entrypoint.sh").read_text()
    assert entrypoint.rstrip().endswith('exec radiusd "$@"')  # radiusd is PID 1
    assert "radiusd-healthcheck" in instruction("HEALTHCHECK")[0]
    assert json.loads(instruction("CMD")[-1]) == ["serve", "-c", "/etc/radiusd/radiusd.toml"]
    assert instruction("WORKDIR")[-1] == "/data"


def test_dockerfile_runs_as_non_root() -> None:
    users = instruction("USER")
    assert users, "no USER: the server would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_dictionaries_are_findable_in_the_image() -> None:
    env = " ".join(instruction("ENV"))
    m = re.search(r"RADIUSD_DICTIONARIES=(\S+)", env)
    assert m, "set RADIUSD_DICTIONARIES so the installed package finds dictionaries/"
    assert "dictionaries" in copy_sources() or "dictionaries/" in copy_sources()
    assert (ROOT / "dictionaries" / "dictionary").is_file()


def test_copied_files_exist_and_are_not_dockerignored() -> None:
    sources = copy_sources()
    assert sources
    for src in sources:
        matches = glob.glob(str(ROOT / src))
        assert matches, f"Dockerfile COPYs {src!r}, which is not in the repository"
        assert not ignored(src), f"Dockerfile COPYs {src!r}, but .dockerignore excludes it"


def test_pip_install_has_what_pyproject_needs() -> None:
    """`pip install .` in the image needs the files pyproject.toml names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    sources = {s.rstrip("/") for s in copy_sources()}
    assert "pyproject.toml" in sources
    assert "radiusd" in sources
    readme = project.get("readme")
    if isinstance(readme, dict):
        readme = readme.get("file")
    if readme:
        assert readme in sources, f"pyproject.toml names readme {readme!r}: COPY it"
    assert any("pip install" in args for args in instruction("RUN"))


# -- profile `cluster` (issue 12): PostgreSQL and two nodes ----------------------------


def test_cluster_profile_has_postgres_and_two_nodes_apart_from_the_single_node(
        compose: dict) -> None:
    services = compose["services"]
    assert "profiles" not in services["radiusd"]  # `docker compose up` is unchanged
    cluster = {name for name, s in services.items() if "cluster" in s.get("profiles", [])}
    assert cluster == {"postgres", "radiusd-a", "radiusd-b"}
    pg = services["postgres"]
    assert pg["image"].startswith("postgres:") and "pg_isready" in " ".join(
        pg["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in pg["volumes"])


def test_cluster_nodes_wait_for_postgres_share_one_key_and_publish_their_own_ports(
        compose: dict) -> None:
    services = compose["services"]
    a, b = services["radiusd-a"], services["radiusd-b"]
    published: list[set[str]] = []
    for node in (a, b):
        assert node["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "./radiusd-cluster.toml:/etc/radiusd/radiusd.toml:ro" in node["volumes"]
        assert "radiusd-cluster-key:/keys" in node["volumes"]  # one sealing key for both
        assert node["stop_signal"] == "SIGTERM"
        ports = port_specs(node["ports"])
        assert {p.split(":")[-1] for p in ports} == {"1812/udp", "1813/udp"}
        published.append({p.rsplit(":", 1)[0] for p in ports})
    single = {p.rsplit(":", 1)[0] for p in port_specs(services["radiusd"]["ports"])}
    assert not (published[0] & published[1]) and not (published[0] | published[1]) & single
