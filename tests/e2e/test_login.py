"""`podman login` and `skopeo login` as a user, a robot and with an app token; public pulls.

Accounts are made with the Dockyard CLI on the server's data directory (docs/identity.md):
a user owning its namespace, a robot of that user granted `write` on one repository, an app token
of the user (log-in name `$app`), and a public repository of the user. Every push is pulled back
into empty storage and the digests compared.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from pathlib import Path

import httpx
import pytest

from . import helpers
from .helpers import CommandFailed, RegistryServer, ToolFactory

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(helpers.use_reference(), reason="the reference registry runs without authentication"),
]


@dataclasses.dataclass(frozen=True)
class Login:
    kind: str  # user, robot, app
    username: str
    secret: str
    repo: str  # a repository this login may push to


@dataclasses.dataclass(frozen=True)
class Accounts:
    owner: str
    password: str
    logins: dict[str, Login]
    public_repo: str


def _last_word(text: str) -> str:
    words = text.split()
    assert words, "the command printed nothing"
    return words[-1]


@pytest.fixture(scope="module")
def accounts(registry: RegistryServer) -> Accounts:
    owner = f"owner{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(16)
    helpers.create_user(registry, owner, password)

    # robot: `robot create NS NAME` prints NS+NAME, then the token
    out = helpers.dockyard_cli(registry, "robot", "create", owner, "ci")
    assert f"{owner}+ci" in out.split(), f"unexpected `robot create` output: {out!r}"
    robot_name, robot_token = f"{owner}+ci", _last_word(out)
    assert robot_token != robot_name, f"`robot create` printed no token: {out!r}"
    robot_repo = f"{owner}/robot-target"
    helpers.dockyard_cli(registry, "repo", "create", robot_repo)
    helpers.dockyard_cli(registry, "perm", "grant", robot_repo, robot_name, "write")

    # app token: printed once
    app_token = _last_word(helpers.dockyard_cli(registry, "token", "create", owner, "--title", "e2e login"))

    public_repo = f"{owner}/public"
    helpers.dockyard_cli(registry, "repo", "create", public_repo, "--public")
    return Accounts(
        owner=owner,
        password=password,
        logins={
            "user": Login("user", owner, password, f"{owner}/user-pushed"),
            "robot": Login("robot", robot_name, robot_token, robot_repo),
            "app": Login("app", "$app", app_token, f"{owner}/app-pushed"),
        },
        public_repo=public_repo,
    )


def _small_image(tmp_path: Path, name: str) -> tuple[Path, str]:
    layout = tmp_path / f"src-{name}"
    digest = helpers.umoci_image(layout, "v1", tmp_path, layers=[{f"{name}/a.bin": 150_000}, {f"{name}/b.bin": 9_000}])
    return layout, digest


def _tags(registry: RegistryServer, repo: str) -> list[str]:
    r = httpx.get(f"{registry.url}/v2/{repo}/tags/list", timeout=30, auth=registry.auth)
    if r.status_code == 404:
        return []
    assert r.status_code == 200, f"GET tags of {repo} -> {r.status_code} {r.text[:300]}"
    return list(r.json().get("tags") or [])


@pytest.mark.parametrize("who", ["user", "robot", "app"])
def test_skopeo_login_push_pull(who: str, registry: RegistryServer, accounts: Accounts, tmp_path: Path) -> None:
    login = accounts.logins[who]
    env = helpers.client_env(tmp_path / "client")
    helpers.login(["skopeo"], registry, env, login.username, login.secret)
    assert helpers.auth_file_entry(env, registry), "skopeo login stored no credentials"

    src, digest = _small_image(tmp_path, f"skopeo-{who}")
    src_tree = helpers.image_tree(src, digest)
    tag = f"skopeo-{secrets.token_hex(3)}"
    remote = f"docker://{registry.host}/{login.repo}:{tag}"
    helpers.skopeo_copy(f"oci:{src}:v1", remote, env, "--preserve-digests")
    assert helpers.skopeo_raw(remote, env) == helpers.layout_blob(src, digest)
    helpers.check_manifest(registry, login.repo, tag, digest)

    dst = tmp_path / "dst"
    helpers.skopeo_copy(remote, f"oci:{dst}:v1", env, "--preserve-digests")
    assert helpers.layout_ref(dst, "v1")["digest"] == digest
    assert helpers.image_tree(dst, digest) == src_tree


@pytest.mark.parametrize("who", ["user", "robot", "app"])
def test_podman_login_push_pull(
    who: str, registry: RegistryServer, accounts: Accounts, container_tool: ToolFactory, tmp_path: Path
) -> None:
    login = accounts.logins[who]
    src, _ = _small_image(tmp_path, f"podman-{who}")
    pusher = container_tool("podman", "push", login=False)
    pusher.login(registry, login.username, login.secret)
    assert helpers.auth_file_entry(pusher.env, registry), "podman login stored no credentials"
    pusher.import_oci(src, "v1", "localhost/dockyard-e2e/login-src:v1")
    ref = f"{registry.host}/{login.repo}:podman-{secrets.token_hex(3)}"
    digest_file = tmp_path / "digest"
    pusher("push", "--tls-verify=false", "--digestfile", digest_file, "localhost/dockyard-e2e/login-src:v1", ref)
    pushed = digest_file.read_text().strip()
    assert pushed.startswith("sha256:")
    helpers.check_manifest(registry, login.repo, ref.rsplit(":", 1)[1], pushed)

    puller = container_tool("podman", "pull", login=False)
    puller.login(registry, login.username, login.secret)
    puller("pull", "--tls-verify=false", ref)
    assert puller("image", "inspect", "--format", "{{.Digest}}", ref).strip() == pushed
    puller("logout", registry.host)
    assert not helpers.auth_file_entry(puller.env, registry), "podman logout left credentials behind"


def test_wrong_password_login_fails_and_stores_nothing(
    registry: RegistryServer, accounts: Accounts, container_tool: ToolFactory, tmp_path: Path
) -> None:
    env = helpers.client_env(tmp_path / "client")
    res = helpers.login(["skopeo"], registry, env, accounts.owner, "wrong-" + accounts.password, check=False)
    assert res.returncode != 0, f"skopeo login with a wrong password succeeded:\n{res.stdout}\n{res.stderr}"
    assert helpers.auth_file_entry(env, registry) is None, Path(env["REGISTRY_AUTH_FILE"]).read_text()

    podman = container_tool("podman", "wrong", login=False)
    res = helpers.login(podman.prefix, registry, podman.env, accounts.owner, "wrong-" + accounts.password, check=False)
    assert res.returncode != 0, f"podman login with a wrong password succeeded:\n{res.stdout}\n{res.stderr}"
    assert helpers.auth_file_entry(podman.env, registry) is None, Path(podman.env["REGISTRY_AUTH_FILE"]).read_text()


def test_public_repository_pull_without_login_push_refused(
    registry: RegistryServer, accounts: Accounts, container_tool: ToolFactory, tmp_path: Path
) -> None:
    # The owner pushes to the public repository.
    owner_env = helpers.client_env(tmp_path / "owner")
    helpers.login(["skopeo"], registry, owner_env, accounts.owner, accounts.password)
    src, digest = _small_image(tmp_path, "public")
    src_tree = helpers.image_tree(src, digest)
    tag = f"pub-{secrets.token_hex(3)}"
    remote = f"docker://{registry.host}/{accounts.public_repo}:{tag}"
    helpers.skopeo_copy(f"oci:{src}:v1", remote, owner_env, "--preserve-digests")

    # Nobody logged in: skopeo and podman pull it.
    anon_env = helpers.client_env(tmp_path / "anon")
    dst = tmp_path / "dst"
    helpers.skopeo_copy(remote, f"oci:{dst}:v1", anon_env, "--preserve-digests")
    assert helpers.layout_ref(dst, "v1")["digest"] == digest
    assert helpers.image_tree(dst, digest) == src_tree
    podman = container_tool("podman", "anon", login=False)
    ref = f"{registry.host}/{accounts.public_repo}:{tag}"
    podman("pull", "--tls-verify=false", ref)
    assert podman("image", "inspect", "--format", "{{.Digest}}", ref).strip() == digest
    assert json.loads(Path(anon_env["REGISTRY_AUTH_FILE"]).read_text()) in ({}, {"auths": {}})

    # ... but cannot push, neither to the public repository nor to a new one.
    other, _ = _small_image(tmp_path, "anon-push")
    for repo in (accounts.public_repo, f"{accounts.owner}/anon-new"):
        anon_tag = f"anon-{secrets.token_hex(3)}"
        with pytest.raises(CommandFailed):
            helpers.skopeo_copy(f"oci:{other}:v1", f"docker://{registry.host}/{repo}:{anon_tag}", anon_env)
        assert anon_tag not in _tags(registry, repo)
    with pytest.raises(CommandFailed):
        podman("push", "--tls-verify=false", ref, f"{registry.host}/{accounts.public_repo}:podman-anon")
    assert "podman-anon" not in _tags(registry, accounts.public_repo)
