#!/bin/sh
# The stand-in redis image's entrypoint, doing what the upstream image's does: a first argument
# that is an option or a .conf file is redis-server's; redis-server runs as the redis user
# (owning what is in /data); protected mode is off by default, as the upstream image builds its
# server (a container's clients never come from loopback).
set -e
case "$1" in
  -v | --version | -h | --help) exec redis-server "$@" ;;
  -* | *.conf) set -- redis-server "$@" ;;
esac
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
  find . \! -user redis -exec chown redis '{}' +
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
if [ "$1" = redis-server ]; then
  shift
  # A configuration file must stay first; options given after it win over this default.
  case "$1" in
    -* | "") set -- redis-server --protected-mode no "$@" ;;
    *) config="$1" && shift && set -- redis-server "$config" --protected-mode no "$@" ;;
  esac
fi
umask 0077
exec "$@"
