"""`make fakes`: serve the fake SignNow and Stripe APIs on 127.0.0.1:FAKES_PORT (8025) until Ctrl-C."""

from __future__ import annotations

import os
import time

from tests.fakes.providers import start, stop


def main() -> None:
    fake = start(int(os.environ.get("FAKES_PORT", "8025")))
    print(f"Fake SignNow and Stripe on {fake.base}. Start the API with:\n"
          f"  SIGNNOW_BASE_URL={fake.base}/signnow STRIPE_API_BASE={fake.base}/stripe "
          f"OUTBOUND_ALLOW_HOSTS={fake.host} make run", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stop(fake)


if __name__ == "__main__":
    main()
