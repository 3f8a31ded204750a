"""Loading policies: merging a folder, interpolation, and one precise line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import PolicyError
from gateway.routing.policy.loader import load_policy
from tests.conftest import KEY, key_hash

BASE = f"""\
version: 1
upstreams:
  qwen-eu:
    base_url: http://vllm:8000/v1
    model: Qwen/Qwen3-32B
    api_key: ${{VLLM_API_KEY:-}}
    region: eu-west
    hosting: self
    cost: {{gpu_hour_usd: 4.0, tokens_per_second: 2500}}
    context_window: 32768
    capabilities: [tools, json, continuation]
  gpt-4o:
    base_url: https://api.openai.com/v1
    model: gpt-4o
    api_key: ${{OPENAI_API_KEY}}
    region: us
    cost: {{input_per_mtok: 2.50, output_per_mtok: 10.00}}
models:
  chat: {{candidates: [qwen-eu, gpt-4o], objective: cost}}
data_classes:
  public: {{}}
  personal: {{hosting: [self], regions: [eu-west]}}
classify:
  detectors:
    - {{detect: [email, iban], class: personal}}
tenants:
  acme-eu:
    keys: ["{key_hash(KEY)}"]
    regions: [eu-west]
"""
ENV = {"OPENAI_API_KEY": "sk-real"}


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path, ENV if env is None else env)
    return [p.removeprefix(f"{path}: ") for p in caught.value.problems]


def test_a_valid_policy_loads_with_prices_per_token(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(BASE)
    policy = load_policy(tmp_path / "p.yaml", ENV)
    assert policy.price["gpt-4o"] == pytest.approx((2.5e-6, 10e-6, 2.5e-6, 2.5e-6, 2.5e-6))  # cache: the input price
    assert policy.price["qwen-eu"][0] == pytest.approx(4.0 / 3600 / 2500)
    assert policy.tenant(KEY) is not None
    assert policy.tenant("sk-sy-wrong") is None
    assert policy.doc.upstreams["gpt-4o"].api_key is not None
    assert policy.doc.upstreams["qwen-eu"].api_key is None
    assert "sk-real" not in repr(policy.doc)


def test_the_hash_follows_the_text_not_the_secrets(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(BASE)
    one = load_policy(tmp_path / "p.yaml", ENV).hash
    assert load_policy(tmp_path / "p.yaml", {"OPENAI_API_KEY": "rotated"}).hash == one
    (tmp_path / "p.yaml").write_text(BASE.replace("objective: cost", "objective: priority"))
    assert load_policy(tmp_path / "p.yaml", ENV).hash != one


def test_a_folder_merges_into_one_policy(tmp_path: Path) -> None:
    head, tenants = BASE.split("tenants:\n")
    (tmp_path / "10-main.yaml").write_text(head)
    (tmp_path / "20-tenants.yaml").write_text("version: 1\ntenants:\n" + tenants)
    (tmp_path / "notes.txt").write_text("ignored")
    policy = load_policy(tmp_path, ENV)
    assert set(policy.doc.tenants) == {"acme-eu"}
    assert set(policy.doc.upstreams) == {"qwen-eu", "gpt-4o"}


def test_a_name_defined_in_two_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(BASE)
    (tmp_path / "b.yaml").write_text("models:\n  chat: {candidates: [qwen-eu]}\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path, ENV)
    expected = f"{tmp_path / 'b.yaml'}: models.chat: defined twice (also in {tmp_path / 'a.yaml'})"
    assert caught.value.problems == [expected]


def test_an_unset_variable_is_named_with_its_place(tmp_path: Path) -> None:
    assert problems(tmp_path, BASE, env={}) == [
        "upstreams.gpt-4o.api_key: environment variable OPENAI_API_KEY is not set "
        "(write ${OPENAI_API_KEY:-} to allow it unset)"]


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("    region: eu-west\n    hosting: self", "    regoin: eu-west\n    hosting: self",
     "upstreams.qwen-eu.regoin: unknown key 'regoin' (did you mean 'region'?)"),
    ("candidates: [qwen-eu, gpt-4o]", "candidates: [qwen-eu, gpt4o]",
     "models.chat.candidates[1]: upstream 'gpt4o' is not defined (did you mean 'gpt-4o'?)"),
    ("    regions: [eu-west]\n", "    regions: [eu-wset]\n",
     "tenants.acme-eu.regions[0]: region 'eu-wset' is used by no upstream"),
    ("{detect: [email, iban], class: personal}", "{regex: {ticket: 'TCK-(\\\\d+'}, class: personal}",
     "classify.detectors[0].regex.ticket: bad regular expression: missing ), unterminated subpattern at position 4"),
    ("detect: [email, iban]", "detect: [email, ssn]",
     "classify.detectors[0].detect[1]: unknown detector 'ssn' "
     "(built in: credit_card, email, iban, national_id, phone)"),
    ("objective: cost", "objective: cheapest",
     "models.chat.objective: Input should be 'cost', 'latency' or 'priority'"),
    (f'keys: ["{key_hash(KEY)}"]', f'keys: ["{KEY}"]',
     "tenants.acme-eu.keys: keys must be 'sha256:' + 64 hex digits (see `switchyard keys new`), never a raw key"),
    ("cost: {input_per_mtok: 2.50, output_per_mtok: 10.00}", "cost: {input_per_mtok: 2.50}",
     "upstreams.gpt-4o.cost: give either input_per_mtok and output_per_mtok, or gpu_hour_usd and tokens_per_second"),
    ("version: 1\n", "", "version: required key is missing"),
])
def test_each_problem_is_one_line_naming_its_place(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in BASE
    assert problems(tmp_path, BASE.replace(old, new)) == [expected]


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    text = BASE.replace("regions: [eu-west]\n", "regions: [mars]\n").replace("[qwen-eu, gpt-4o]", "[qwen, gpt-4o]")
    assert problems(tmp_path, text) == [
        "models.chat.candidates[0]: upstream 'qwen' is not defined (did you mean 'qwen-eu'?)",
        "tenants.acme-eu.regions[0]: region 'mars' is used by no upstream"]


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    found = problems(tmp_path, "version: 1\nupstreams: [\n")
    assert len(found) == 1
    assert ":3:1: not valid YAML" in found[0]


@pytest.mark.parametrize(("tail", "expected"), [
    ("    budget: {when_exhausted: reject}\n", "tenants.acme-eu.budget: give usd_per_day, usd_per_month or both"),
    ("    budget: {usd_per_day: 5, when_exhausted: {route_to: [qwen]}}\n",
     "tenants.acme-eu.budget.when_exhausted.route_to[0]: upstream 'qwen' is not defined (did you mean 'qwen-eu'?)"),
    ("    rate_limit: {}\n", "tenants.acme-eu.rate_limit: give requests_per_minute, tokens_per_minute or both"),
    ("    budget: {usd_per_day: -1}\n",
     "tenants.acme-eu.budget.usd_per_day: Input should be greater than or equal to 0"),
])
def test_budget_and_rate_limit_problems(tmp_path: Path, tail: str, expected: str) -> None:
    assert problems(tmp_path, BASE + tail) == [expected]


def test_budgets_and_rate_limits_load(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(BASE + "    budget: {usd_per_day: 50, when_exhausted: {route_to: [qwen-eu]}}\n"
                                     "    rate_limit: {requests_per_minute: 600, tokens_per_minute: 200000}\n")
    tenant = load_policy(tmp_path / "p.yaml", ENV).doc.tenants["acme-eu"]
    assert tenant.budget is not None
    assert tenant.budget.usd_per_day == 50
    assert tenant.rate_limit is not None
    assert tenant.rate_limit.requests_per_minute == 600


def test_without_litellm_only_openai_upstreams_with_a_cost_load(tmp_path: Path) -> None:
    text = BASE.replace("    cost: {input_per_mtok: 2.50, output_per_mtok: 10.00}\n", "").replace(
        "  gpt-4o:\n    base_url: https://api.openai.com/v1\n", "  gpt-4o:\n    kind: anthropic\n")
    assert problems(tmp_path, text) == [
        "upstreams.gpt-4o.kind: unknown upstream kind 'anthropic' (openai; other providers need litellm: "
        "pip install 'switchyard[litellm]')"]


def test_an_upstream_without_any_price_is_an_error(tmp_path: Path) -> None:
    text = BASE.replace("    cost: {input_per_mtok: 2.50, output_per_mtok: 10.00}\n", "")
    assert problems(tmp_path, text) == [
        "upstreams.gpt-4o.cost: no price in the policy and none in litellm's price map for 'gpt-4o'; give cost "
        "(an upstream without a price would look free)"]


def test_an_openai_upstream_needs_a_base_url(tmp_path: Path) -> None:
    text = BASE.replace("    base_url: https://api.openai.com/v1\n", "")
    assert problems(tmp_path, text) == ["upstreams.gpt-4o.base_url: required for kind openai"]


@pytest.mark.parametrize("url", ["http://", "http://:80/v1", "http://api:0/v1", "http://api:99999/v1", "http://[::1/v1",
                                 "http://api/v1?version=2", "http://api/v1#x", "http://api/my v1", "http://api/v\u00e9"])
def test_a_base_url_must_be_one_a_request_line_can_carry(tmp_path: Path, url: str) -> None:
    text = BASE.replace("    base_url: https://api.openai.com/v1\n", f"    base_url: '{url}'\n")
    assert problems(tmp_path, text) == [f"upstreams.gpt-4o.base_url: '{url}' is not scheme://host[:port][/path] "
                                        "(printable ASCII, no query or fragment)"]


@pytest.mark.parametrize("name", ["Transfer-Encoding", "connection", "expect", "upgrade", "host", "cookie", "te"])
def test_a_header_that_frames_the_request_or_carries_credentials_is_never_forwarded(tmp_path: Path,
                                                                                    name: str) -> None:
    text = BASE.replace("    base_url: https://api.openai.com/v1\n",
                        f"    base_url: https://api.openai.com/v1\n    forward_headers: [x-tenant, {name}]\n")
    found = problems(tmp_path, text)
    assert len(found) == 1
    assert found[0].startswith("upstreams.gpt-4o.forward_headers")
    assert found[0].endswith("credentials and framing headers are never forwarded")


def test_a_key_from_a_file_loses_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BASE)
    key = load_policy(path, {"OPENAI_API_KEY": "sk-real\n"}).doc.upstreams["gpt-4o"].api_key
    assert key is not None
    assert key.get_secret_value() == "sk-real"


@pytest.mark.parametrize("key", ["sk-re al", "sk-real\r\nx-evil: 1", "sk-r\u00e9al", "sk-\x00"])
def test_a_key_no_header_could_carry_is_refused_without_showing_it(tmp_path: Path, key: str) -> None:
    found = problems(tmp_path, BASE, {"OPENAI_API_KEY": key})
    assert len(found) == 1
    assert found[0].startswith("upstreams.gpt-4o.api_key: ")
    assert "which no key has" in found[0]
    assert key.strip() not in found[0]


def alias_bomb(levels: int = 9) -> str:
    """The billion laughs: each level a list of nine aliases of the level before it."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [{', '.join(f'*a{level - 1}' for _ in range(9))}]")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_naming_its_file_before_it_is_expanded(tmp_path: Path) -> None:
    (tmp_path / "10-base.yaml").write_text(BASE)
    (tmp_path / "20-bomb.yaml").write_text(alias_bomb())
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path, ENV)
    assert caught.value.problems == [f"{tmp_path / '20-bomb.yaml'}: its aliases expand it to more than 200,000 values "
                                     "(a YAML alias bomb?); write the values out or use fewer nested aliases"]


def test_a_few_aliases_still_load(tmp_path: Path) -> None:
    text = BASE.replace("    region: eu-west\n    hosting: self\n", "    region: &eu eu-west\n    hosting: self\n", 1)
    (tmp_path / "p.yaml").write_text(text.replace("regions: [eu-west]\n", "regions: [*eu]\n"))
    assert load_policy(tmp_path / "p.yaml", ENV).doc.tenants["acme-eu"].regions == frozenset({"eu-west"})


def test_a_policy_file_over_a_mib_is_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, BASE + "#" * (1024 * 1024) + "\n") == ["over 1024 KiB, too big for a policy file"]


@pytest.mark.parametrize(("cost", "price"), [
    ("{input_per_mtok: 3, output_per_mtok: 15, cache_read_per_mtok: 0.3, cache_write_per_mtok: 3.75}",
     (3e-6, 15e-6, 0.3e-6, 3.75e-6, 3.75e-6)),  # a one-hour write price not given: the write price
    ("{input_per_mtok: 3, output_per_mtok: 15, cache_read_per_mtok: 0.3, cache_write_per_mtok: 3.75,"
     " cache_write_1h_per_mtok: 6}", (3e-6, 15e-6, 0.3e-6, 3.75e-6, 6e-6)),
    ("{input_per_mtok: 3, output_per_mtok: 15, cache_read_per_mtok: 0.3}", (3e-6, 15e-6, 0.3e-6, 3e-6, 3e-6)),
    ("{gpu_hour_usd: 3.6, tokens_per_second: 1000}", (1e-6, 1e-6, 1e-6, 1e-6, 1e-6)),  # the GPU's price, cache or not
    ("{gpu_hour_usd: 3.6, tokens_per_second: 1000, cache_read_per_mtok: 0}", (1e-6, 1e-6, 0.0, 1e-6, 1e-6)),
])
def test_cache_prices_are_optional_in_either_form_of_cost(tmp_path: Path, cost: str,
                                                          price: tuple[float, ...]) -> None:
    text = BASE.replace("cost: {gpu_hour_usd: 4.0, tokens_per_second: 2500}", f"cost: {cost}")
    (tmp_path / "p.yaml").write_text(text)
    assert load_policy(tmp_path / "p.yaml", ENV).price["qwen-eu"] == pytest.approx(price)


@pytest.mark.parametrize(("cost", "expected"), [
    ("{input_per_mtok: 3, output_per_mtok: 15, cache_write_per_mtok: -1}",
     "upstreams.gpt-4o.cost.cache_write_per_mtok: Input should be greater than or equal to 0"),
    ("{cache_read_per_mtok: 0.3, cache_write_per_mtok: 3.75}",  # cache prices alone price nothing else
     "upstreams.gpt-4o.cost: give either input_per_mtok and output_per_mtok, or gpu_hour_usd and tokens_per_second"),
    ("{input_per_mtok: 3, output_per_mtok: 15, cache_price: 1}",
     "upstreams.gpt-4o.cost.cache_price: unknown key 'cache_price'"),
])
def test_a_bad_cache_price_is_one_line_naming_its_place(tmp_path: Path, cost: str, expected: str) -> None:
    text = BASE.replace("cost: {input_per_mtok: 2.50, output_per_mtok: 10.00}", f"cost: {cost}")
    assert problems(tmp_path, text)[0].startswith(expected)  # (a bad price also reads as none given, after it)
