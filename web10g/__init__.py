"""web10g: RFC 4898 TCP extended statistics for every flow, into numpy."""
__version__ = "0.1.0"
