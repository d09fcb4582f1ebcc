#!/usr/bin/env bash
# The README's test command: installs everything the suite needs (system packages
# for a virtual screen with OpenGL, the CPU build of torch, the package with its
# test extras), lints with ruff, then runs the whole suite under Xvfb. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="xvfb xauth libgl1 libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 \
libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 \
libdbus-1-3 libfontconfig1"
missing=$(dpkg-query -W -f='${Status} ${Package}\n' $APT_PACKAGES 2>/dev/null | grep -vc "install ok installed" || true)
if ! command -v xvfb-run >/dev/null || [ "$missing" != "0" ] || \
   [ "$(dpkg-query -W -f='${Package}\n' $APT_PACKAGES 2>/dev/null | wc -l)" -lt "$(echo $APT_PACKAGES | wc -w)" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $APT_PACKAGES >/dev/null
fi

# torch first and pinned: the local CPU wheel, never the multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"

# lint first: a style or pyflakes error fails the run before the (longer) suite starts
python -m ruff check .

export QT_API=pyqt6
exec xvfb-run -a -s "-screen 0 1280x1024x24" python -m pytest -q -p no:cacheprovider --durations=15 "$@"
