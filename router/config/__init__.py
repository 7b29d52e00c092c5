"""router.yaml: pydantic models, loading, environment overrides, readable errors.

One module per section (docs/configuration.md):

=================  ==========================================================
``server``         ServerConfig, TlsConfig, LimitsConfig
``policy``         PolicyConfig, WeightsConfig, CircuitConfig, TokenEstimateConfig,
                   OutputEstimateConfig
``backends``       BackendConfig, PriorsConfig, CostConfig, TokenizerConfig
``discovery``      DiscoveryConfig, KubernetesDiscoveryConfig, KubernetesSourceConfig
``auth``           AuthConfig, ApiKeyConfig, TenantConfig, SecretsManagerConfig
``telemetry``      TelemetryConfig, MetricsConfig, TracingConfig, LogsConfig
``edge``           EdgeConfig and its sub-sections
``sessions``       SessionsConfig and its stores (sqlite, redis, dynamodb), SummariesConfig
``templates``      TemplatesConfig
``root``           RouterConfig (the whole file)
``loading``        parse_config, load_config, HYBRID_ROUTER__ environment overrides
``refs``           ``env:VAR`` values and ``*_env`` fields resolved (hybrid_router.refs)
=================  ==========================================================

Import from ``router.config``; every public name is re-exported here. Environment is
read only when ``load_config`` is called, never at import time.
"""

from router.config.auth import ApiKeyConfig, AuthConfig, SecretsManagerConfig, TenantConfig
from router.config.backends import (
    BackendConfig,
    BackendKind,
    CostConfig,
    PriorsConfig,
    TokenizerConfig,
)
from router.config.discovery import (
    DiscoveryConfig,
    KubernetesDiscoveryConfig,
    KubernetesSourceConfig,
)
from router.config.edge import (
    EdgeBackendTemplate,
    EdgeConfig,
    EdgeCostConfig,
    EdgeDirectoryConfig,
    EdgeModelStoreConfig,
    EdgePriorsConfig,
    EdgeRelayConfig,
    EdgeRelayTlsConfig,
)
from router.config.loading import (
    ENV_CONFIG_PATH,
    ENV_PREFIX,
    load_config,
    parse_config,
    yaml_problem,
)
from router.config.policy import (
    CircuitConfig,
    OutputEstimateConfig,
    PolicyConfig,
    TokenEstimateConfig,
    WeightsConfig,
)
from router.config.refs import (
    BackendRefs,
    ConfigRefError,
    backend_refs,
    resolve_env_var,
    resolve_ref,
)
from router.config.root import RouterConfig
from router.config.server import LimitsConfig, ServerConfig, TlsConfig
from router.config.sessions import (
    DynamoDbSessionsConfig,
    RedisSessionsConfig,
    SessionsConfig,
    SqliteSessionsConfig,
    SummariesConfig,
)
from router.config.telemetry import LogsConfig, MetricsConfig, TelemetryConfig, TracingConfig
from router.config.templates import TemplatesConfig

__all__ = [
    "ENV_CONFIG_PATH",
    "ENV_PREFIX",
    "ApiKeyConfig",
    "AuthConfig",
    "BackendConfig",
    "BackendRefs",
    "BackendKind",
    "CircuitConfig",
    "OutputEstimateConfig",
    "ConfigRefError",
    "CostConfig",
    "DiscoveryConfig",
    "EdgeBackendTemplate",
    "EdgeConfig",
    "EdgeCostConfig",
    "EdgeDirectoryConfig",
    "EdgeModelStoreConfig",
    "EdgePriorsConfig",
    "EdgeRelayConfig",
    "EdgeRelayTlsConfig",
    "KubernetesDiscoveryConfig",
    "KubernetesSourceConfig",
    "LimitsConfig",
    "LogsConfig",
    "MetricsConfig",
    "PolicyConfig",
    "PriorsConfig",
    "RouterConfig",
    "SessionsConfig",
    "SqliteSessionsConfig",
    "RedisSessionsConfig",
    "DynamoDbSessionsConfig",
    "SummariesConfig",
    "TemplatesConfig",
    "SecretsManagerConfig",
    "ServerConfig",
    "TelemetryConfig",
    "TenantConfig",
    "TlsConfig",
    "TokenEstimateConfig",
    "TokenizerConfig",
    "TracingConfig",
    "WeightsConfig",
    "backend_refs",
    "load_config",
    "parse_config",
    "yaml_problem",
    "resolve_env_var",
    "resolve_ref",
]
