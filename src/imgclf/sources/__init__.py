"""Where the scrape stage's images come from: `base` (the interface every source implements),
`folder` (a local tree or zip), `yandex` (Yandex Images in headless Chromium), `web` (catalogue
pages and JavaScript shops), and `http` (the guarded downloader they share)."""
