# bash completion for huracanfs(1).
#
# Completes the subcommands, their options, category names, FUSE options,
# configuration files, directories for `mount`, and the mounted huracanfs
# file systems for `status`, `flush`, `unmount` and `limit`. Self-contained: works with or
# without the bash-completion package.

# Prints the mount points of the huracanfs file systems, one per line.
_huracanfs_mounts()
{
    local src mnt type rest IFS=$' \t\n'
    while read -r src mnt type rest; do
        [ "$type" = fuse.huracanfs ] || continue
        # /proc/self/mounts writes space, tab, newline and backslash
        # as octal escapes.
        printf '%b\n' "$mnt"
    done </proc/self/mounts 2>/dev/null
}

_huracanfs()
{
    local cur prev cmd i word
    COMPREPLY=()
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}

    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W 'mount status flush unmount limit
            check-config auth repair --version --help' -- "$cur"))
        return 0
    fi
    cmd=${COMP_WORDS[1]}

    # The argument of an option.
    case "$prev" in
    -c|--config)
        if [ "$cmd" = flush ]; then
            COMPREPLY=($(compgen -W 'learning logs monitoring models
                data_cache other' -- "$cur"))
        else
            compopt -o filenames 2>/dev/null
            local IFS=$'\n'
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        return 0
        ;;
    --category)
        COMPREPLY=($(compgen -W 'learning logs monitoring models
            data_cache other' -- "$cur"))
        return 0
        ;;
    -t|--timeout|--max-unreachable|--up|--down)
        return 0   # a number or a rate: nothing to complete
        ;;
    -o)
        # FUSE options: complete the last of a comma-separated list.
        local head=""
        case "$cur" in *,*) head=${cur%,*},; cur=${cur##*,} ;; esac
        COMPREPLY=($(compgen -P "$head" -W 'allow_other allow_root ro
            default_permissions max_read=' -- "$cur"))
        compopt -o nospace 2>/dev/null
        return 0
        ;;
    esac

    # Has the positional argument (MOUNTPOINT) been given already?
    local have_arg=0 skip=0
    for ((i = 2; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        if [ $skip -eq 1 ]; then skip=0; continue; fi
        case "$word" in
        -c|--config|--category|-o|-t|--timeout|--max-unreachable|--up|--down)
            skip=1 ;;
        -*) ;;
        *) have_arg=1 ;;
        esac
    done

    case "$cmd" in
    mount)
        if [[ "$cur" == -* ]]; then
            COMPREPLY=($(compgen -W '--config --foreground -o --help' \
                -- "$cur"))
        elif [ $have_arg -eq 0 ]; then
            compopt -o filenames 2>/dev/null
            local IFS=$'\n'
            COMPREPLY=($(compgen -d -- "$cur"))
        fi
        ;;
    status|flush|unmount|limit)
        if [[ "$cur" == -* ]]; then
            case "$cmd" in
            status) COMPREPLY=($(compgen -W '--json --files --check
                --max-unreachable' -- "$cur")) ;;
            flush) COMPREPLY=($(compgen -W '--category --wait' -- "$cur")) ;;
            unmount) COMPREPLY=($(compgen -W '--timeout --lazy' -- "$cur")) ;;
            limit) COMPREPLY=($(compgen -W '--up --down' -- "$cur")) ;;
            esac
        elif [ $have_arg -eq 0 ]; then
            local IFS=$'\n'
            COMPREPLY=($(compgen -W "$(_huracanfs_mounts)" -- "$cur"))
            if [ ${#COMPREPLY[@]} -eq 0 ]; then
                compopt -o filenames 2>/dev/null
                COMPREPLY=($(compgen -d -- "$cur"))
            fi
        fi
        ;;
    check-config|auth)
        COMPREPLY=($(compgen -W '--config' -- "$cur"))
        ;;
    repair)
        if [[ "$cur" == -* ]]; then
            COMPREPLY=($(compgen -W '--config' -- "$cur"))
        else
            compopt -o filenames 2>/dev/null
            COMPREPLY=($(compgen -d -- "$cur"))
        fi
        ;;
    esac
    return 0
}

complete -F _huracanfs huracanfs
