"""The one root exception of fusionwatch. Every error we raise on purpose derives from it and
carries a message that tells the user what to do next."""


class FusionwatchError(Exception):
    """Root of every deliberate fusionwatch error."""


class ConfigError(FusionwatchError):
    """The configuration is invalid or incomplete."""


class DependencyUnavailable(FusionwatchError):
    """A service fusionwatch needs (broker, database) did not answer in time."""


