"""Erf."""
from scipy.special import erf

from simulator.ops._common import unary

run = unary(erf)
