#!/usr/bin/env bash
# Install the built bundle for the current user: ~/.local/opt/vaestudio, a launcher in
# ~/.local/bin, the .desktop entry and the icons in the hicolor theme.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x dist/vaestudio/vaestudio ] || { echo "build the bundle first: packaging/build.sh" >&2; exit 1; }
prefix=${PREFIX:-$HOME/.local}
rm -rf "$prefix/opt/vaestudio"
mkdir -p "$prefix/opt" "$prefix/bin" "$prefix/share/applications"
cp -a dist/vaestudio "$prefix/opt/vaestudio"
ln -sf "$prefix/opt/vaestudio/vaestudio" "$prefix/bin/vaestudio"
sed "s|^Exec=vaestudio|Exec=$prefix/bin/vaestudio|" packaging/vaestudio.desktop > "$prefix/share/applications/vaestudio.desktop"
for size in 16 32 48 64 128 256 512; do
    d="$prefix/share/icons/hicolor/${size}x${size}/apps"
    mkdir -p "$d"
    cp "vaestudio/resources/icons/vaestudio-$size.png" "$d/vaestudio.png"
done
mkdir -p "$prefix/share/icons/hicolor/scalable/apps"
cp vaestudio/resources/icons/vaestudio.svg "$prefix/share/icons/hicolor/scalable/apps/vaestudio.svg"
echo "installed to $prefix/opt/vaestudio; run 'vaestudio' or find it in the application menu"
