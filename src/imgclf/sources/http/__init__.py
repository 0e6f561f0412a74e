"""Fetching from the web safely: the guarded transport, the address guard, the downloader, and
credentials kept out of logs."""
