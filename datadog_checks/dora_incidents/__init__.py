from .__about__ import __version__
from .check import DoraIncidentsCheck

__all__ = ['__version__', 'DoraIncidentsCheck']
