<?php
// The original system's ecard worker, as the 2009 slides show it (GearmanWorker, two
// addServer lines, addFunction('ecard', ...), while ($worker->work());), drawing the matrix
// card with GD. Only the addresses are arguments: php ecard_worker.php PORT_A PORT_B.
// It prints "ready" once its function is added and "card SN" after each card.

const FONT = __DIR__ . '/../../../renderers/fonts/DIPSCardSans-Bold.otf';

// 密保卡图片生成函数 (the card-drawing function)
function make_ecard_function($job) {
    if ($delay = (int)getenv('ECARD_DELAY_MS')) {  // tests: a card that takes a while
        fwrite(STDOUT, "drawing\n");
        usleep($delay * 1000);
    }
    $data = unserialize($job->workload());
    $pSN = is_array($data) ? (string)($data['pSN'] ?? '') : '';
    $pData = is_array($data) ? ($data['pData'] ?? '') : '';
    if (!preg_match('/^[0-9]{1,24}$/', $pSN)) {
        $job->sendException("bad_request: pSN must be 1 to 24 digits 0-9, got '$pSN'");
        return '';
    }
    $numbers = is_array($pData) ? $pData : explode(',', preg_replace('/\s+/', '', $pData));
    if (count($numbers) != 80) {
        $job->sendException('bad_request: pData must hold 80 numbers, got ' . count($numbers));
        return '';
    }

    $image = imagecreatetruecolor(480, 300);
    $white = imagecolorallocate($image, 255, 255, 255);
    $navy = imagecolorallocate($image, 19, 57, 120);
    $ink = imagecolorallocate($image, 22, 33, 58);
    $stripe = imagecolorallocate($image, 241, 245, 251);
    $rule = imagecolorallocate($image, 205, 215, 231);
    imagefilledrectangle($image, 0, 0, 479, 299, $white);
    imagefilledrectangle($image, 0, 0, 479, 58, $navy);
    imagettftext($image, 18, 0, 16, 30, $white, FONT, '金山密码保护卡');
    imagettftext($image, 10, 0, 16, 50, $white, FONT, 'PASSPOD MATRIXCARD SN: ' . $pSN);
    $rows = 'ABCDEFGH';
    for ($c = 0; $c < 10; $c++) {
        imagettftext($image, 11, 0, 62 + $c * 40, 82, $navy, FONT, (string)(($c + 1) % 10));
    }
    for ($r = 0; $r < 8; $r++) {
        $y = 88 + $r * 26;
        if ($r % 2) {
            imagefilledrectangle($image, 40, $y, 459, $y + 25, $stripe);
        }
        imageline($image, 40, $y, 459, $y, $rule);
        imagettftext($image, 11, 0, 18, $y + 18, $navy, FONT, $rows[$r]);
        for ($c = 0; $c < 10; $c++) {
            $n = sprintf('%02d', (int)$numbers[$r * 10 + $c]);
            imagettftext($image, 12, 0, 56 + $c * 40, $y + 18, $ink, FONT, $n);
        }
    }
    ob_start();
    imagepng($image, null, 6);
    $png = ob_get_clean();
    imagedestroy($image);
    fwrite(STDOUT, "card $pSN\n");
    return $png;
}

// ..... 进程控制代码 (process control) .....

$worker = new GearmanWorker();
$worker->addServer('127.0.0.1', (int)$argv[1]);
$worker->addServer('127.0.0.1', (int)($argv[2] ?? $argv[1]));

// 添加Worker处理函数 (add the worker's function)
$worker->addFunction('ecard', 'make_ecard_function');
fwrite(STDOUT, "ready\n");

while ($worker->work());
