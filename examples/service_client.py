"""gradsvc.Client against a running `gradsvc serve` (GRADSVC_SERVER, else 127.0.0.1:8000): the
seed job answered while it waits, then queued and fetched."""
import os

import gradsvc

with gradsvc.Client(os.environ.get("GRADSVC_SERVER", "http://127.0.0.1:8000")) as client:
    answer = client.run("jobs/seed_chain.yaml")
    print(f"e = {answer['values']['e']}, de/da = {answer['grads']['e']['a']}, "
          f"verified: {answer['verify']['ok']}")
    job_id = client.submit("jobs/seed_chain.yaml")
    status = client.wait(job_id, progress=False)
    print(f"queued job {status['name']}: {status['status']}, "
          f"e = {client.result(job_id)['values']['e']}")
