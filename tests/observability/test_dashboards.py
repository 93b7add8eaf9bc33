"""The Grafana dashboards: the committed JSON is what the code builds, every query (panels' and
annotations') parses with promtool and selects only metrics the gateway exports, the optimizer's
annotations mark each change once, and the query helpers read PromQL right."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.utils import floatToGoString

from observability import metrics
from observability.dashboards import (
    DATASOURCE_UID,
    PanelQuery,
    annotation_queries,
    dashboard_metric_names,
    dashboard_queries,
    expand_variables,
    metric_names,
    panel_queries,
    write_dashboards,
)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus.yml"

TITLES = {
    "thrifty-economics": "thrifty: Fleet economics",
    "thrifty-latency": "thrifty: Latency & SLO",
    "thrifty-pools": "thrifty: Pools & instances",
    "thrifty-optimizer": "thrifty: Optimizer",
}
WITHOUT_QUERIES = {"row", "text"}


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    """The committed files, as Grafana loads them, by uid."""
    loaded = [json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))]
    return {dashboard["uid"]: dashboard for dashboard in loaded}


@pytest.fixture(scope="module")
def queries(dashboards: dict[str, dict[str, Any]]) -> list[PanelQuery]:
    """Every panel's and every annotation's query."""
    return [query for dashboard in dashboards.values() for query in dashboard_queries(dashboard)]


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [nested for panel in dashboard["panels"] for nested in (panel, *panel.get("panels", []))]


def charts(dashboards: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        panel
        for dashboard in dashboards.values()
        for panel in all_panels(dashboard)
        if panel["type"] not in WITHOUT_QUERIES
    ]


def promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if found is None:
        pytest.fail(
            "promtool is not on PATH or at /usr/bin/promtool; install Prometheus "
            "(Debian: apt-get install prometheus) to check the dashboards' queries"
        )
    return found


# --- the committed files ---


def test_committed_dashboards_are_what_the_code_builds(tmp_path: Path) -> None:
    regenerate = "the committed dashboards differ from the code: run `python -m observability.dashboards`"
    built = {path.name: path.read_text() for path in write_dashboards(tmp_path)}
    committed = {path.name: path.read_text() for path in DASHBOARDS.glob("*.json")}
    assert sorted(committed) == sorted(built), regenerate
    for name, text in built.items():
        assert committed[name] == text, f"{name}: {regenerate}"


def test_dashboards_have_their_uid_title_tag_refresh_and_variables(dashboards: dict[str, dict[str, Any]]) -> None:
    assert {uid: dashboard["title"] for uid, dashboard in dashboards.items()} == TITLES
    for dashboard in dashboards.values():
        assert "thrifty" in dashboard["tags"]
        assert dashboard["refresh"] in {"10s", "15s", "20s", "30s"}
        variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
        assert variables["model"]["query"] == "label_values(thrifty_pool_info, model)"
        assert variables["pool"]["query"] == 'label_values(thrifty_pool_info{model=~"$model"}, pool)'
        for variable in variables.values():
            assert (variable["multi"], variable["includeAll"], variable["allValue"]) == (True, True, ".*")
            assert variable["datasource"]["uid"] == DATASOURCE_UID


def test_every_chart_has_queries_a_unit_a_description_and_the_datasource(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    for panel in charts(dashboards):
        title = panel["title"]
        assert panel["targets"], title
        assert all(target["expr"].strip() for target in panel["targets"]), title
        assert panel["fieldConfig"]["defaults"].get("unit"), title
        assert panel.get("description"), title
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, title


def test_panel_ids_are_unique_and_every_panel_is_placed(dashboards: dict[str, dict[str, Any]]) -> None:
    for uid, dashboard in dashboards.items():
        panels = all_panels(dashboard)
        ids = [panel["id"] for panel in panels]
        assert len(ids) == len(set(ids)), uid
        for panel in panels:
            assert set(panel["gridPos"]) == {"h", "w", "x", "y"}, panel["title"]
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
            if panel["type"] != "row":
                assert panel.get("description"), panel["title"]


def test_the_optimizer_board_shows_every_optimizer_metric(dashboards: dict[str, dict[str, Any]]) -> None:
    optimizer = {name for name in metrics.CATALOGUE if name.startswith("thrifty_optimizer_")}
    assert len(optimizer) >= 10
    assert optimizer <= dashboard_metric_names(dashboards["thrifty-optimizer"])


def test_the_optimizer_board_keeps_what_it_steers_beside_the_plan(dashboards: dict[str, dict[str, Any]]) -> None:
    by_title = {panel["title"]: panel for panel in all_panels(dashboards["thrifty-optimizer"])}
    for title, expected in {
        "Traffic weight by pool": {"thrifty_pool_weight"},
        "Observed traffic share by pool": {"thrifty_requests_total"},
        "Target vs proposed instances by pool": {
            "thrifty_pool_instances_target",
            "thrifty_optimizer_pool_proposed_instances",
        },
        "Planned vs actual cost ($/hour)": {
            "thrifty_pool_cost_usd_per_hour",
            "thrifty_optimizer_plan_cost_usd_per_hour",
        },
        "Planned vs observed output tokens per $": {
            "thrifty_fleet_output_tokens_per_usd",
            "thrifty_optimizer_plan_output_tokens_per_usd",
        },
    }.items():
        selected = set().union(*(metric_names(target["expr"]) for target in by_title[title]["targets"]))
        assert expected <= selected, title
    assert not [panel for panel in all_panels(dashboards["thrifty-optimizer"]) if panel["type"] == "text"]


def test_optimizer_annotations_are_prometheus_queries_titled_by_what_changed(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    expected = {
        "thrifty-optimizer": {"Optimizer changes", "Optimizer failed ticks", "Optimizer policy reloads"},
        "thrifty-economics": {"Optimizer changes", "Optimizer policy reloads"},
    }
    for uid, names in expected.items():
        annotations = {a["name"]: a for a in dashboards[uid]["annotations"]["list"]}
        assert set(annotations) == names, uid
        for annotation in annotations.values():
            assert annotation["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}
            assert annotation["enable"] and not annotation["hide"]
            assert annotation["expr"] and annotation["titleFormat"] and annotation["textFormat"]
        changes = annotations["Optimizer changes"]
        assert metric_names(changes["expr"]) == {"thrifty_optimizer_changes_total", "thrifty_pool_info"}
        assert ("{{pool}}" in changes["titleFormat"], "{{what}}" in changes["titleFormat"]) == (True, True)
        assert changes["tagKeys"] == "pool,what"
    failed = next(a for a in dashboards["thrifty-optimizer"]["annotations"]["list"] if "failed" in a["name"])
    assert 'outcome="failed"' in failed["expr"]
    assert {uid for uid, dashboard in dashboards.items() if dashboard["annotations"]} == set(expected)


def test_device_panels_put_gpu_and_tpu_beside_the_cpu(dashboards: dict[str, dict[str, Any]]) -> None:
    # GPU and TPU series exist only on such hosts; beside the CPU series the panel is never empty.
    by_title = {panel["title"]: panel for panel in all_panels(dashboards["thrifty-pools"])}
    for title, expected in {
        "Device utilization": {"thrifty_host_cpu_utilization_ratio", "thrifty_gpu_utilization_ratio"},
        "Device memory": {"thrifty_host_memory_used_bytes", "thrifty_tpu_memory_used_bytes"},
    }.items():
        selected = set().union(*(metric_names(target["expr"]) for target in by_title[title]["targets"]))
        assert expected <= selected, title


# --- the queries ---


def test_every_queried_metric_is_in_the_catalogue(queries: list[PanelQuery]) -> None:
    exported = {series for metric in metrics.CATALOGUE.values() for series in metric.series}
    for query in queries:
        names = metric_names(expand_variables(query.expr))
        assert names, query
        assert names <= exported, f"{query.dashboard} / {query.panel}: {sorted(names - exported)} not exported"


def test_rate_windows_follow_the_dashboard(queries: list[PanelQuery]) -> None:
    for query in queries:
        windows = set(re.findall(r"\[([^\]]*)\]", query.expr))
        assert windows <= {"$__rate_interval", "$__range"}, query
        offsets = set(re.findall(r"\boffset\s+(-?[$\w]+)", query.expr))
        assert offsets <= {"$__interval"}, query


def test_every_query_parses(tmp_path: Path, queries: list[PanelQuery]) -> None:
    rules = [
        {"record": f"thrifty_dashboard_query_{index}", "expr": expand_variables(query.expr)}
        for index, query in enumerate(queries)
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboards", "rules": rules}]}))  # JSON is YAML
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    numbered = "\n".join(
        f"{index}: {query.dashboard} / {query.panel} [{query.ref_id}]" for index, query in enumerate(queries)
    )
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\nrules by index:\n{numbered}"


def test_the_change_annotation_marks_each_change_once(tmp_path: Path, dashboards: dict[str, dict[str, Any]]) -> None:
    """Scrapes every 15s, one point a minute: a pool's first change, then one between two points, then none."""
    (query,) = [q for q in annotation_queries(dashboards["thrifty-optimizer"]) if q.panel.endswith("changes")]
    expr = expand_variables(query.expr, rate_interval="1m")
    marked = [{"labels": '{pool="cpu-a", what="weight"}', "value": 1}]
    test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "15s",
                "input_series": [
                    # First seen at 30s (the series starts with the pool's first change), then +1 at 1m45s.
                    {
                        "series": 'thrifty_optimizer_changes_total{pool="cpu-a", what="weight", job="thrifty"}',
                        "values": "_ _ 1 1 1 1 1 2 2 2 2 2 2 2 2 2 2",
                    },
                    {"series": 'thrifty_pool_info{pool="cpu-a", model="m", job="thrifty"}', "values": "1+0x16"},
                ],
                "promql_expr_test": [
                    {"expr": expr, "eval_time": "1m", "exp_samples": marked},
                    {"expr": expr, "eval_time": "2m", "exp_samples": marked},
                    {"expr": expr, "eval_time": "3m", "exp_samples": []},
                ],
            }
        ],
    }
    path = tmp_path / "annotation-test.yml"
    path.write_text(json.dumps(test))  # JSON is YAML
    result = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{expr}\n{result.stdout}{result.stderr}"


def test_slo_attainment_matches_buckets_as_the_client_labels_them(queries: list[PanelQuery]) -> None:
    attainment = {query.panel: query.expr for query in queries if query.panel.endswith("SLO attainment")}
    for panel, buckets in {
        "TTFT SLO attainment": metrics.TTFT_BUCKETS,
        "TPOT SLO attainment": metrics.TPOT_BUCKETS,
    }.items():
        for bound in buckets:
            assert f'"le", "{floatToGoString(bound)}"' in attainment[panel], (panel, bound)


def test_prometheus_config_is_valid() -> None:
    result = subprocess.run(
        [promtool(), "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = config["scrape_configs"]
    assert (job["job_name"], job["metrics_path"], job["scrape_interval"]) == ("thrifty", "/metrics", "5s")
    assert job["static_configs"] == [{"targets": ["localhost:8000"]}]


def test_provisioning_points_grafana_at_the_dashboards_datasource() -> None:
    (datasource,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert (datasource["uid"], datasource["type"], datasource["isDefault"]) == (DATASOURCE_UID, "prometheus", True)
    assert datasource["url"] == "http://localhost:9090"
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "thrifty.yaml").read_text())["providers"]
    assert (provider["type"], provider["folder"]) == ("file", "thrifty")
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/thrifty"


# --- the helpers ---


def test_panel_queries_reads_collapsed_rows_and_skips_text_panels() -> None:
    dashboard = {
        "uid": "board",
        "panels": [
            {"type": "row", "title": "open", "panels": []},
            {"type": "timeseries", "title": "top", "targets": [{"refId": "A", "expr": "up"}]},
            {"type": "text", "title": "note"},
            {
                "type": "row",
                "title": "closed",
                "panels": [{"type": "stat", "title": "inner", "targets": [{"refId": "B", "expr": "x"}]}],
            },
        ],
    }
    assert panel_queries(dashboard) == [PanelQuery("board", "top", "A", "up"), PanelQuery("board", "inner", "B", "x")]


def test_annotation_queries_read_prometheus_annotations_as_provisioned_or_saved() -> None:
    prometheus = {"type": "prometheus", "uid": "prometheus"}
    dashboard = {
        "uid": "board",
        "panels": [{"type": "timeseries", "title": "top", "targets": [{"refId": "A", "expr": "up"}]}],
        "annotations": {
            "list": [
                {"name": "Annotations & Alerts", "datasource": {"type": "grafana", "uid": "-- Grafana --"}},
                {"name": "provisioned", "datasource": prometheus, "expr": "x > 0"},
                {"name": "saved", "datasource": prometheus, "target": {"refId": "Anno", "expr": "y > 0"}},
            ]
        },
    }
    annotations = [
        PanelQuery("board", "annotation: provisioned", "Anno", "x > 0"),
        PanelQuery("board", "annotation: saved", "Anno", "y > 0"),
    ]
    assert annotation_queries(dashboard) == annotations
    assert dashboard_queries(dashboard) == [PanelQuery("board", "top", "A", "up"), *annotations]
    assert dashboard_metric_names(dashboard) == {"up", "x", "y"}
    assert annotation_queries({"uid": "bare", "annotations": {}}) == []


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            'histogram_quantile(0.95, sum by (le, pool) (rate(ttft_bucket{pool=~"cpu-(a|b)", model!~"x.*"}[1m])))',
            {"ttft_bucket"},
        ),
        ("sum(rate(tokens_total[5m])) or vector(0)", {"tokens_total"}),
        (
            'sum by (model, pool) (rate(req_total{pool!=""}[1m])) / on (model) group_left sum by (model) (rate(req_total[1m]))',
            {"req_total"},
        ),
        ("a_metric * on (pool) group_left (model) pool_info", {"a_metric", "pool_info"}),
        ("clamp_min(sum(rate(cost_total[1m])), 1e-9)", {"cost_total"}),
        ("up == bool 1 unless on() absent(other_metric)", {"up", "other_metric"}),
        ("rate(foo[5m] offset 1h) > 0.5 AND ignoring (job) bar:recorded", {"foo", "bar:recorded"}),
        ('sum(x) by (pool) / count without (instance) (y{le="0.5"}) > Inf', {"x", "y"}),
        ("max_over_time(rate(z[1m])[5m:30s])", {"z"}),
        ('label_replace(slo >= 2.0 - 1e-9, "le", "2.0", "", "") # not_a_metric', {"slo"}),
        ('count_values by (model) ("le", slo_seconds)', {"slo_seconds"}),
        (r'x{a="say \"hi\" {b} by (c)"}', {"x"}),
        ("vector(1)", set()),
        ("x - x offset $__interval > $threshold", {"x"}),
    ],
)
def test_metric_names(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


@pytest.mark.parametrize(
    ("expr", "rate_interval", "expected"),
    [
        ('rate(x{pool=~"$pool"}[$__rate_interval])', "1m", 'rate(x{pool=~".*"}[1m])'),
        ('rate(x{model=~"${model}"}[${__rate_interval}])', "30s", 'rate(x{model=~".*"}[30s])'),
        ("increase(x[$__range]) / rate(x[$__interval])", "1m", "increase(x[5m]) / rate(x[1m])"),
        ('x{pool=~"${pool:regex}"}', "1m", 'x{pool=~".*"}'),
        ('label_replace(x, "a", "$1", "b", "(.*)")', "1m", 'label_replace(x, "a", "$1", "b", "(.*)")'),
        ('x{a=~"$unknown"}', "1m", 'x{a=~"$unknown"}'),
    ],
)
def test_expand_variables(expr: str, rate_interval: str, expected: str) -> None:
    assert expand_variables(expr, rate_interval) == expected
