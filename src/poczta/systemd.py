"""The systemd unit that runs `poczta serve`, filled with a config's real paths.

systemd starts poczta as its user directly, with CAP_NET_BIND_SERVICE as the one
capability (ambient, to bind ports below 1024), so it is never root and needs neither
CAP_SETUID nor CAP_SETGID; `user` in the config then names the user it already is. The
filesystem is read-only to it but for the data dir. `contrib/poczta.service` is this
unit for the usual paths.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["executable", "render_unit"]

_HOMES = (Path("/home"), Path("/root"), Path("/run/user"))

UNIT = """\
# poczta mail server; `poczta init --systemd` writes this unit for a config.
# Install it as /etc/systemd/system/poczta.service, then:
#   systemctl daemon-reload && systemctl enable --now poczta
[Unit]
Description=poczta mail server (SMTP, submission, POP3)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={exec_start} serve -c {config}
ExecReload=/bin/kill -HUP $MAINPID
# SIGTERM to the master only: it stops the workers, then the committer, in that order.
KillMode=mixed
TimeoutStopSec=60
Restart=on-failure
RestartSec=2s
LimitNOFILE=65536

# Never root: started as its user, with the one capability binding ports 25, 465,
# 587, 110 and 995 needs.
User={user}
Group={group}
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
UMask=0027

ProtectSystem=strict
ReadWritePaths={data_dir}
ProtectHome={protect_home}
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
"""


def executable() -> str:
    """How this poczta is started: its console script, else its Python with -m."""
    script = Path(sys.executable).parent / "poczta"
    return str(script) if script.exists() else f"{sys.executable} -m poczta"


def render_unit(
    config: Path, data_dir: Path, user: str, group: str, exec_start: str | None = None
) -> str:
    """The unit for the config file `config`; ProtectHome is read-only instead of `yes`
    when poczta, its config or its data dir lives under a home directory."""
    start = exec_start or executable()
    paths = [Path(start.split()[0]), config, data_dir]
    under_home = any(home in p.parents or p == home for p in paths for home in _HOMES)
    return UNIT.format(
        exec_start=start,
        config=config,
        user=user,
        group=group,
        data_dir=data_dir,
        protect_home="read-only" if under_home else "yes",
    )
