"""The tests run under the process settings launch.py applies (effscale.host), set before jax starts."""

from effscale import host

host.set_xla_flags()
