<?php
// A Gearman worker for the door's tests, written the way PHP code uses GearmanWorker.
// Usage: php test_worker.php PORT [PORT...] ; functions are named after what they do.
// It prints "ready" once its functions are added, then one line per job it finishes.
$worker = new GearmanWorker();
foreach (array_slice($argv, 1) as $port) {
    $worker->addServer('127.0.0.1', (int)$port);
}
$worker->setId('php-test-' . getmypid());

// the workload back, reversed (raw bytes in, raw bytes out)
$worker->addFunction('php_reverse', function (GearmanJob $job) {
    return strrev($job->workload());
});
// what the job saw, as JSON: workload (base64), handle, function, unique, pid; the
// workload also goes to stdout ("inspect BASE64"), for background jobs
$worker->addFunction('php_inspect', function (GearmanJob $job) {
    fwrite(STDOUT, "inspect " . base64_encode($job->workload()) . "\n");
    return json_encode(['workload' => base64_encode($job->workload()),
                        'handle' => $job->handle(), 'function' => $job->functionName(),
                        'unique' => $job->unique(), 'pid' => getmypid()]);
});
// 'slow', as tests/helpers/faulty_worker.py offers it: unserialize() the workload as the
// seed's worker does, sleep its 'sleep' seconds, answer with the request plus pid, start
// and end (PHP serialize()); says "start PID" when it begins
$worker->addFunction('slow', function (GearmanJob $job) {
    $data = unserialize($job->workload());
    $start = microtime(true);
    fwrite(STDOUT, "start " . getmypid() . "\n");
    usleep((int)(($data['sleep'] ?? 0) * 1e6));
    return serialize($data + ['pid' => getmypid(), 'start' => $start, 'end' => microtime(true)]);
});
// progress: two statuses, a data chunk, a warning, then the result
$worker->addFunction('php_progress', function (GearmanJob $job) {
    $job->sendStatus(1, 3);
    $job->sendData('chunk-1');
    $job->sendWarning('careful');
    $job->sendStatus(3, 3);
    return 'done';
});
// a status, then a second's work: what jobStatus() shows meanwhile
$worker->addFunction('php_status_wait', function (GearmanJob $job) {
    $job->sendStatus(1, 2);
    sleep(1);
    return 'done';
});
$worker->addFunction('php_exception', function (GearmanJob $job) {
    $job->sendException('bad pSN: ' . $job->workload());
    return '';
});
$worker->addFunction('php_fail', function (GearmanJob $job) {
    $job->sendFail();
    return '';
});
// dies mid-job (the process exits without answering)
$worker->addFunction('php_crash', function (GearmanJob $job) {
    fwrite(STDOUT, "crashing\n");
    exit(3);
});
// a job that runs past its CAN_DO_TIMEOUT of 1 s
$worker->addFunction('php_overrun', function (GearmanJob $job) {
    sleep(3);
    return 'late';
}, null, 1);

fwrite(STDOUT, "ready\n");
while ($worker->work() || $worker->returnCode() == GEARMAN_TIMEOUT) {
    fwrite(STDOUT, "job done\n");
}
fwrite(STDOUT, "work() ended: " . $worker->returnCode() . " " . $worker->error() . "\n");
