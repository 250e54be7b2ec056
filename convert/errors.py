"""The one exception type the converter raises for problems a user can fix."""


class ConversionError(Exception):
    """A clear, actionable conversion failure (bad input, disk full, unknown quant...)."""
