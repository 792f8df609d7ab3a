"""The static bootstrap made of Envoy Gateway's translation (tests/bench/envoy_config.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bench import envoy_config
from tests.bench.envoy_config import TranslationError

GATEWAY = "modelplane-system/modelplane"
LISTENER = f"{GATEWAY}/http"
ADS = {"ads": {}, "resourceApiVersion": "V3"}
ASSIGNMENT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def translated() -> dict[str, Any]:
    """The shape egctl x translate --to xds prints, cut down to one route and one cluster."""
    hcm = {
        "name": "envoy.filters.network.http_connection_manager",
        "typedConfig": {
            "rds": {"configSource": ADS, "routeConfigName": LISTENER},
            "statPrefix": "http-10080",
        },
    }
    return {
        "xds": {
            GATEWAY: {
                "configs": [
                    {
                        "@type": envoy_config.TYPE_PREFIX + "BootstrapConfigDump",
                        "bootstrap": {
                            "admin": {
                                "address": {"socketAddress": {"address": "127.0.0.1", "portValue": 19000}}
                            },
                            "clusterManager": {"localClusterName": "local_cluster"},
                            "dynamicResources": {"adsConfig": {}, "cdsConfig": ADS, "ldsConfig": ADS},
                            "overloadManager": {"refreshInterval": "0.250s"},
                            "staticResources": {
                                "clusters": [{"name": "xds_cluster"}, {"name": "local_cluster"}],
                                "listeners": [{"name": "envoy-gateway-proxy-stats-0.0.0.0-19001"}],
                            },
                        },
                    },
                    {
                        "@type": envoy_config.TYPE_PREFIX + "EndpointsConfigDump",
                        "dynamicEndpointConfigs": [
                            {
                                "endpointConfig": {
                                    "@type": ASSIGNMENT_TYPE,
                                    "clusterName": "httproute/bench/iris/rule/1",
                                    "endpoints": [
                                        {
                                            "lbEndpoints": [
                                                {
                                                    "endpoint": {
                                                        "address": {
                                                            "socketAddress": {
                                                                "address": "127.0.0.1",
                                                                "portValue": 80,
                                                            }
                                                        }
                                                    }
                                                }
                                            ]
                                        }
                                    ],
                                }
                            }
                        ],
                    },
                    {
                        "@type": envoy_config.TYPE_PREFIX + "ClustersConfigDump",
                        "dynamicActiveClusters": [
                            {
                                "cluster": {
                                    "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                                    "name": "httproute/bench/iris/rule/1",
                                    "type": "EDS",
                                    "edsClusterConfig": {"edsConfig": ADS},
                                    "connectTimeout": "10s",
                                }
                            }
                        ],
                    },
                    {
                        "@type": envoy_config.TYPE_PREFIX + "ListenersConfigDump",
                        "dynamicListeners": [
                            {
                                "activeState": {
                                    "listener": {"name": "envoy-gateway-proxy-ready-0.0.0.0-19003"}
                                }
                            },
                            {
                                "activeState": {
                                    "listener": {
                                        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
                                        "name": LISTENER,
                                        "address": {
                                            "socketAddress": {"address": "0.0.0.0", "portValue": 10080}
                                        },
                                        "defaultFilterChain": {"filters": [hcm]},
                                    }
                                }
                            },
                        ],
                    },
                    {
                        "@type": envoy_config.TYPE_PREFIX + "RoutesConfigDump",
                        "dynamicRouteConfigs": [
                            {
                                "routeConfig": {
                                    "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
                                    "name": LISTENER,
                                    "virtualHosts": [{"name": "vh", "domains": ["*"]}],
                                }
                            }
                        ],
                    },
                ]
            }
        }
    }


def bootstrap(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "admin_port": 20000,
        "listener_ports": {LISTENER: 20001},
        "upstream_ports": {80: 20002},
    }
    return envoy_config.static_bootstrap(translated(), GATEWAY, **(arguments | overrides))


def test_the_gateways_listener_binds_to_the_given_loopback_port_with_its_routes_inline() -> None:
    (listener,) = bootstrap()["staticResources"]["listeners"]
    assert listener["name"] == LISTENER
    assert listener["address"] == {"socketAddress": {"address": "127.0.0.1", "portValue": 20001}}
    (hcm,) = listener["defaultFilterChain"]["filters"]
    assert "rds" not in hcm["typedConfig"]
    assert hcm["typedConfig"]["routeConfig"] == {
        "name": LISTENER,
        "virtualHosts": [{"name": "vh", "domains": ["*"]}],
    }
    assert "@type" not in listener


def test_an_eds_cluster_becomes_static_on_the_local_servers_port() -> None:
    (cluster,) = bootstrap()["staticResources"]["clusters"]
    assert cluster["type"] == "STATIC"
    assert "edsClusterConfig" not in cluster
    assert cluster["connectTimeout"] == "10s"  # the rest as translated
    socket = cluster["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]["endpoint"]["address"][
        "socketAddress"
    ]
    assert socket == {"address": "127.0.0.1", "portValue": 20002}


def test_nothing_of_the_control_plane_is_left_and_the_rest_of_the_bootstrap_is_kept() -> None:
    result = bootstrap()
    assert "dynamicResources" not in result
    assert result["clusterManager"] == {}
    assert result["admin"]["address"]["socketAddress"]["portValue"] == 20000
    assert result["overloadManager"] == {"refreshInterval": "0.250s"}
    assert "xds_cluster" not in {c["name"] for c in result["staticResources"]["clusters"]}


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"listener_ports": {}}, "no port given for the listener"),
        ({"listener_ports": {LISTENER: 1, "other/gw/https": 2}}, "translated no listener"),
        ({"upstream_ports": {8081: 1}}, "no local port for the Service port 80"),
    ],
)
def test_what_cannot_be_mapped_is_an_error(overrides: dict[str, Any], says: str) -> None:
    with pytest.raises(TranslationError, match=says):
        bootstrap(**overrides)


def test_another_gateway_is_an_error() -> None:
    with pytest.raises(TranslationError, match="no xds configs"):
        envoy_config.static_bootstrap(
            translated(), "other/gw", admin_port=1, listener_ports={}, upstream_ports={}
        )
