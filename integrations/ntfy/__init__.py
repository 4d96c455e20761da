"""A local stand-in for an ntfy server (https://ntfy.sh), to try push notifications with."""
