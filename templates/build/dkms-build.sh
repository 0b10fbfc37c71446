#!/bin/bash
# How kmod builds a hand-written module: the way dkms builds it on a VM (dkms's `build`), so that the
# two are the same build. Read dkms.conf with dkms's variables set, skip the kernel if a
# BUILD_EXCLUSIVE_* directive rules it out, copy the source to $dkms_tree/NAME/VERSION/build, apply
# PATCH[], run PRE_BUILD, the make command with dkms's prefix (make -jN KERNELRELEASE=<kernel>),
# check every BUILT_MODULE_LOCATION[i]/BUILT_MODULE_NAME[i].ko, run POST_BUILD.
# Written for kmod from dkms's documented behaviour (dkms(8), dkms 3.x); kmod/build/dkmsbuild.py mounts
# the folders, sets the inputs and reads the "KMOD-" lines. Inputs (environment):
#   KMOD_KERNELVER  the kernel release to build for       KMOD_MACHINE  its `uname -m`
#   KMOD_SRC        the source folder (read-only)          KMOD_CONF     the dkms.conf to read
#   KMOD_COLLECT    set when the dkms.conf names no module: the folder whose modules.order lists them
#   KMOD_HEADERS    header trees to search when a header is missing
#   KMOD_DKMS_TREE, KMOD_KSOURCEDIR  (host builds) where dkms's tree and the kernel headers are
# No `set -u`: bash 5.0 (bullseye) calls ${#ARRAY[@]} of an unset array an error; dkms does not set it either.
export LC_ALL=C
say() { printf 'KMOD-%s\n' "$*"; }
CR=$'\r'
kernelver=$KMOD_KERNELVER
arch=$KMOD_MACHINE
dkms_tree=${KMOD_DKMS_TREE:-/var/lib/dkms}
source_tree=/usr/src
install_tree=/lib/modules
kernel_source_dir=${KMOD_KSOURCEDIR:-$install_tree/$kernelver/build}
if [[ -e $kernel_source_dir/include/config/auto.conf ]]; then
    kernel_config=$kernel_source_dir/include/config/auto.conf
else
    kernel_config=$kernel_source_dir/.config
fi
say "HOST-RELEASE: $(uname -r)"

# The variables dkms takes from a dkms.conf (the rest of the file's variables are dropped).
VARS="PACKAGE_NAME PACKAGE_VERSION PRE_BUILD POST_BUILD POST_ADD PRE_INSTALL POST_INSTALL POST_REMOVE
      MAKE MAKE_MATCH PATCH PATCH_MATCH CLEAN BUILT_MODULE_NAME BUILT_MODULE_LOCATION DEST_MODULE_NAME
      DEST_MODULE_LOCATION STRIP AUTOINSTALL BUILD_DEPENDS BUILD_EXCLUSIVE_ARCH BUILD_EXCLUSIVE_CONFIG
      BUILD_EXCLUSIVE_KERNEL BUILD_EXCLUSIVE_KERNEL_MIN BUILD_EXCLUSIVE_KERNEL_MAX OBSOLETE_BY"

read_conf() {
    local v i lines
    for v in $VARS; do unset "$v"; done
    # Like dkms: source the file in a subshell (its stdout discarded), print each variable as
    # NAME[i]="value" through an unquoted echo, and evaluate that: a value is expanded twice.
    lines=$(
        . "$1" >/dev/null
        for v in $VARS; do
            eval "indices=\${!$v[@]}"
            for i in $indices; do
                eval echo "$v[$i]=\\\"\${$v[$i]%\$CR}\\\""
            done
        done
    )
    eval "$lines"
}

# dkms compares kernel versions as strings with every number padded to three digits.
ver() {
    local s=$1 out=""
    while [[ $s =~ ^([^0-9]*)([0-9]+)(.*)$ ]]; do
        out+="${BASH_REMATCH[1]}$(printf '%03d' "$((10#${BASH_REMATCH[2]}))")"
        s=${BASH_REMATCH[3]}
    done
    printf '%s' "$out$s"
}

module= module_version=
read_conf "$KMOD_CONF"
module=${PACKAGE_NAME:-} module_version=${PACKAGE_VERSION:-}
if [[ -z $module || -z $module_version ]]; then
    say "ERROR: dkms.conf sets no PACKAGE_NAME or no PACKAGE_VERSION"
    exit 4
fi
read_conf "$KMOD_CONF"   # again with $module and $module_version set, as dkms's build does
for v in PACKAGE_NAME PACKAGE_VERSION MAKE MAKE_MATCH PATCH BUILT_MODULE_NAME BUILT_MODULE_LOCATION \
         DEST_MODULE_NAME DEST_MODULE_LOCATION PRE_BUILD POST_BUILD AUTOINSTALL STRIP BUILD_EXCLUSIVE_ARCH \
         BUILD_EXCLUSIVE_CONFIG BUILD_EXCLUSIVE_KERNEL BUILD_EXCLUSIVE_KERNEL_MIN BUILD_EXCLUSIVE_KERNEL_MAX; do
    eval "indices=\${!$v[@]}"
    for i in $indices; do
        eval "value=\${$v[$i]}"
        say "CONF: $v $i $(printf '%s' "$value" | base64 -w0)"
    done
done

# The modules: records up to the highest index any of the four arrays sets.
num=0
for v in BUILT_MODULE_NAME BUILT_MODULE_LOCATION DEST_MODULE_NAME DEST_MODULE_LOCATION; do
    eval "indices=\${!$v[@]}"
    for i in $indices; do (( i + 1 > num )) && num=$((i + 1)); done
done
built_name=() built_location=()
bad=0
for ((i = 0; i < num; i++)); do
    built_name[i]=${BUILT_MODULE_NAME[i]:-}
    built_location[i]=${BUILT_MODULE_LOCATION[i]:-}
    [[ -z ${built_name[i]} && $num == 1 ]] && built_name[i]=$PACKAGE_NAME
    [[ -n ${built_location[i]} && ${built_location[i]: -1} != / ]] && built_location[i]+=/
    if [[ -z ${built_name[i]} ]]; then
        say "ERROR: dkms.conf: no BUILT_MODULE_NAME[$i]"; bad=1
    fi
    case ${built_name[i]} in *.o|*.ko) say "ERROR: dkms.conf: BUILT_MODULE_NAME[$i] ends in .o or .ko"; bad=1 ;; esac
    case ${DEST_MODULE_LOCATION[i]:-} in
        /kernel*|/updates*|/extra*) ;;
        "") say "ERROR: dkms.conf: no DEST_MODULE_LOCATION[$i]"; bad=1 ;;
        *) say "ERROR: dkms.conf: DEST_MODULE_LOCATION[$i] does not begin with /kernel, /updates or /extra"; bad=1 ;;
    esac
done
if (( num == 0 )) && [[ -z ${KMOD_COLLECT:-} ]]; then
    say "ERROR: dkms.conf: no BUILT_MODULE_NAME"; bad=1
fi
(( bad )) && exit 4

# The make command: MAKE[0], or the MAKE[i] whose MAKE_MATCH[i] matches the kernel, or dkms's default.
make_command=
[[ -n ${MAKE_MATCH[0]:-} ]] || make_command=${MAKE[0]:-}
for ((i = 0; i < ${#MAKE[@]}; i++)); do
    [[ -n ${MAKE[i]:-} && -n ${MAKE_MATCH[i]:-} && $kernelver =~ ${MAKE_MATCH[i]} ]] && make_command=${MAKE[i]}
done
[[ -n $make_command ]] || make_command="make -C $kernel_source_dir M=$dkms_tree/$module/$module_version/build"
if [[ -e $kernel_config ]] && grep -q '^CONFIG_CC_IS_CLANG=y' "$kernel_config"; then
    make_command+=" LLVM=1"
fi

# BUILD_EXCLUSIVE_*: a kernel they rule out is skipped, as dkms skips it (its exit code 77).
excluded() { say "EXCLUDED: $*"; exit 77; }
[[ -n ${OBSOLETE_BY:-} && -z ${BUILD_EXCLUSIVE_KERNEL_MAX:-} ]] && BUILD_EXCLUSIVE_KERNEL_MAX=$OBSOLETE_BY
if [[ -n ${BUILD_EXCLUSIVE_KERNEL:-} && ! $kernelver =~ $BUILD_EXCLUSIVE_KERNEL ]]; then
    excluded "BUILD_EXCLUSIVE_KERNEL=\"$BUILD_EXCLUSIVE_KERNEL\" does not match kernel $kernelver"
fi
if [[ -n ${BUILD_EXCLUSIVE_KERNEL_MIN:-} && "$(ver "$kernelver")" < "$(ver "$BUILD_EXCLUSIVE_KERNEL_MIN")" ]]; then
    excluded "kernel $kernelver is older than BUILD_EXCLUSIVE_KERNEL_MIN=\"$BUILD_EXCLUSIVE_KERNEL_MIN\""
fi
if [[ -n ${BUILD_EXCLUSIVE_KERNEL_MAX:-} && "$(ver "$kernelver")" > "$(ver "$BUILD_EXCLUSIVE_KERNEL_MAX")" ]]; then
    excluded "kernel $kernelver is newer than BUILD_EXCLUSIVE_KERNEL_MAX=\"$BUILD_EXCLUSIVE_KERNEL_MAX\""
fi
if [[ -n ${BUILD_EXCLUSIVE_ARCH:-} && ! $arch =~ $BUILD_EXCLUSIVE_ARCH ]]; then
    excluded "BUILD_EXCLUSIVE_ARCH=\"$BUILD_EXCLUSIVE_ARCH\" does not match $arch"
fi
if [[ -n ${BUILD_EXCLUSIVE_CONFIG:-} && -e $kernel_config ]]; then
    for kconf in $BUILD_EXCLUSIVE_CONFIG; do
        case $kconf in
            !*) grep -q "^${kconf#!}=[ym]" "$kernel_config" && excluded "BUILD_EXCLUSIVE_CONFIG: this kernel sets ${kconf#!}" ;;
            *) grep -q "^$kconf=[ym]" "$kernel_config" || excluded "BUILD_EXCLUSIVE_CONFIG: this kernel does not set $kconf" ;;
        esac
    done
fi

build_dir=$dkms_tree/$module/$module_version/build
mkdir -p "$build_dir" && cp -R --preserve=mode,timestamps "$KMOD_SRC/." "$build_dir/" || exit 15
cd "$build_dir" || exit 15
say "BUILD-DIR: $build_dir"

for ((i = 0; i < ${#PATCH[@]}; i++)); do
    p=${PATCH[i]}
    [[ -n $p ]] || continue
    [[ -z ${PATCH_MATCH[i]:-} || $kernelver =~ ${PATCH_MATCH[i]} ]] || continue
    [[ $p == *../* || ! -e patches/$p ]] && { say "ERROR: PATCH[$i] patches/$p is not in the source"; exit 5; }
    patch -p1 < "patches/$p" || { say "ERROR: PATCH[$i] patches/$p does not apply"; exit 6; }
done

run_script() {  # $1 = PRE_BUILD or POST_BUILD, $2 = its value: a command below the build folder
    [[ -n $2 ]] || return 0
    local run="$build_dir/$2"
    if [[ -x ${run%% *} ]]; then
        ( cd "$build_dir" && eval "$run" ) || { say "ERROR: the $1 script ($2) failed with exit $?"; exit 10; }
    else
        say "WARNING: the $1 script ${2%% *} is not executable, so dkms skips it: keep its exec bit"
    fi
}
run_script PRE_BUILD "${PRE_BUILD:-}"

the_make_command=${make_command/#make/make -j${KMOD_JOBS:-1} KERNELRELEASE=$kernelver}
say "MAKE: $the_make_command"
set -o pipefail
( eval "$the_make_command" ) 2>&1 | tee "$dkms_tree/.make.log"
rc=$?
set +o pipefail

found() { find . -name '*.ko' -type f | sed 's|^\./||' | sort | while read -r f; do say "FOUND: $f"; done; }
if (( rc != 0 )); then
    # Where a missing header is, for the diagnosis: the kernel's own, another arch's, or nowhere.
    grep -o 'fatal error: [^:]*: No such file or directory' "$dkms_tree/.make.log" | sed 's/^fatal error: //; s/: No such.*//' |
        sort -u | while read -r h; do
            where=""
            for d in ${KMOD_HEADERS:-$kernel_source_dir}; do
                for inc in "$d/include" "$d/include/uapi"; do [[ -e $inc/$h ]] && where+=" generic"; done
                for a in "$d"/arch/*/include; do
                    for inc in "$a" "$a/uapi" "$a/generated" "$a/generated/uapi"; do
                        [[ -e $inc/$h ]] && where+=" arch=$(basename "$(dirname "$a")")"
                    done
                done
            done
            this=$(ls "$kernel_source_dir/arch" 2>/dev/null | head -n 1)
            say "HEADER: $h this=$this$(printf '%s\n' $where | sort -u | tr '\n' ' ' | sed 's/^/ /; s/ $//')"
        done
    say "MAKE-FAILED: $rc"
    exit 10
fi

built=()
if (( num > 0 )); then
    missing=0
    for ((i = 0; i < num; i++)); do
        # -L too: a link (or FIFO) where a module belongs is named as BUILT, so that the host's
        # collection (kmod.nofollow) refuses it and says what it is, instead of "missing"
        if [[ -e ${built_location[i]}${built_name[i]}.ko || -L ${built_location[i]}${built_name[i]}.ko ]]; then
            say "BUILT: $i ${built_location[i]}${built_name[i]}.ko"
            built+=("${built_location[i]}${built_name[i]}.ko")
        else
            say "MISSING: $i ${built_location[i]}${built_name[i]}.ko"; missing=1
        fi
    done
    (( missing )) && { found; exit 7; }
else
    # No module named: every module make built, as kbuild's modules.order files list them, in any
    # subfolder (entries are foo.o or foo.ko, relative to the file's folder or absolute).
    i=0
    declare -A seen=()
    while read -r order; do
        dir=${order%/modules.order}
        while read -r entry; do
            [[ -n $entry ]] || continue
            [[ $entry == /* ]] || entry=$dir/$entry
            entry=${entry#"$build_dir"/}
            entry=${entry#./}
            ko=${entry%.[ok]*}.ko
            while [[ $ko == ./* ]]; do ko=${ko#./}; done
            [[ (-e $ko || -L $ko) && -z ${seen[$ko]:-} ]] || continue
            seen[$ko]=1
            say "BUILT: $i $ko"
            built+=("$ko")
            i=$((i + 1))
        done < "$order"
    done < <(find "${KMOD_COLLECT%/}" -name modules.order -type f | awk '{ print length($0) " " $0 }' | sort -n | cut -d' ' -f2-)
    (( i > 0 )) || { say "MISSING: - ${KMOD_COLLECT%/}/modules.order"; found; exit 7; }
fi

run_script POST_BUILD "${POST_BUILD:-}"
exit 0
