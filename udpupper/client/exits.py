"""udpupper-client's exit statuses, every mode's, in one place (docs/client.md
lists them): as ``ping`` has them where a mode is ``ping``'s."""

EXIT_OK = 0  # every line answered; some probe answered; some size answered
EXIT_UNANSWERED = 1  # some line not; no probe; no size
EXIT_USAGE = 2  # a bad command line or host
EXIT_CANNOT_SEND = 2  # the host refuses to send there at all (as ping's 2)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it; 143 for SIGTERM
EXIT_OUTPUT_CLOSED = -1  # end as cat does when nobody reads: by SIGPIPE
