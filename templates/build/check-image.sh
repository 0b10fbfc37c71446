# Runs first in every pinned build container (kmod/build/matrix.py), before the build command ("$@"):
# the image must hold exactly the locked packages ($KMOD_LOCKED_PACKAGES, sorted name:arch=version
# lines). Otherwise it lists what it holds and exits 97; kmod refuses the image in one line.
got=$(dpkg-query -W -f '${db:Status-Status} ${Package}:${Architecture}=${Version}\n' | sed -n 's/^installed //p' | LC_ALL=C sort)
if [ "$got" != "$KMOD_LOCKED_PACKAGES" ]; then
    printf '%s\n' "$got" | sed 's/^/KMOD-INSTALLED: /'
    exit 97
fi
exec "$@"
