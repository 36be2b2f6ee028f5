"""``deploy``: the stage list (pipeline), its composed config, and which runtimes it measures."""

from edgeprune.deploy.config import DeployConfig, DeviceConfig, FineTuneConfig, RunConfig
from edgeprune.deploy.pipeline import deploy

__all__ = ["DeployConfig", "DeviceConfig", "FineTuneConfig", "RunConfig", "deploy"]
