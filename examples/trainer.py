#!/usr/bin/python3
"""An example trainer: writes complete training runs into a directory.

It acts like the training engine of the seeds
(shared/seeds/comprehensive-dropbox-upload-structure.md): it uses the
directory given as its argument (a huracanfs mount) as its data and models
directory, and for each symbol writes

    models/training/{date}/{SYMBOL}/model/model.bin              ~5-10 MB
    models/training/{date}/{SYMBOL}/metrics/training_metrics.json
    models/training/{date}/{SYMBOL}/features/features.json
    models/training/{date}/{SYMBOL}/data/{symbol}_{timestamp}_candles.parquet
                                                                 ~1-5 MB
    models/training/{date}/{SYMBOL}/results/trades.csv           < 1 MB

plus logs/engine.log (appended line by line, in the seeds' log format),
logs/learning/insights.json, and today/monitoring/health.json through the
mount's `today` link. It knows nothing of Dropbox: uploading, the model
metadata and the shared candle copies are the filesystem's work.

The bytes are pseudo-random (the model) or synthetic (metrics, trades);
the candle file is not a real parquet file but starts and ends with the
parquet magic "PAR1". --small writes tiny files (for tests), --seed makes
the bytes deterministic.

    python3 examples/trainer.py ~/huracan
    python3 examples/trainer.py ~/huracan --symbols SOL-USDT --small --seed 1

Standard library only.
"""

import argparse
import csv
import datetime
import io
import json
import os
import random
import struct
import sys

DEFAULT_SYMBOLS = ['SOL-USDT', 'BTC-USDT', 'ETH-USDT']

# Rough prices, so trades and candles look like their market.
BASE_PRICE = {'SOL': 160.0, 'BTC': 88000.0, 'ETH': 3100.0}

TRADE_COLUMNS = [
    'trade_id', 'symbol', 'entry_timestamp', 'exit_timestamp',
    'entry_price', 'exit_price', 'direction', 'position_size_gbp',
    'pnl_bps', 'pnl_gbp', 'exit_reason', 'hold_duration_minutes',
    'is_winner', 'model_confidence', 'market_regime',
]
EXIT_REASONS = ['TAKE_PROFIT', 'STOP_LOSS', 'TIMEOUT', 'MODEL_SIGNAL']
REGIMES = ['TREND', 'RANGE', 'PANIC']

MIB = 1024 * 1024


class Trainer:
    def __init__(self, root, date, rng, small, out):
        self.root = root
        self.date = date
        self.rng = rng
        self.small = small
        self.out = out
        self.written = []  # (relative path, size)

    # -- output helpers ------------------------------------------------

    def path(self, rel):
        return os.path.join(self.root, rel)

    def write_file(self, rel, data, chunk=MIB):
        """Writes `data` to root/rel in chunks, as a trainer saving a
        model or a data frame does."""
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, 'wb') as f:
            for off in range(0, len(data), chunk):
                f.write(data[off:off + chunk])
        self.written.append((rel, len(data)))
        return p

    def log(self, event, **fields):
        """Appends one line to logs/engine.log, seed style:
        [2025-11-12T16:58:00Z] [info] model_saved_locally path=..."""
        now = datetime.datetime.now(datetime.timezone.utc)
        line = '[%s] [info] %s' % (now.strftime('%Y-%m-%dT%H:%M:%SZ'),
                                   event)
        for k, v in fields.items():
            line += ' %s=%s' % (k, v)
        p = self.path('logs/engine.log')
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, 'a') as f:
            f.write(line + '\n')

    # -- the artefacts -------------------------------------------------

    def model_bytes(self):
        if self.small:
            n = self.rng.randint(45 * 1024, 55 * 1024)
        else:
            n = self.rng.randint(5 * MIB, 10 * MIB)
        return self.rng.randbytes(n)

    def candles_bytes(self, pair):
        """Hourly OHLCV rows packed as doubles between the parquet magic:
        not a parquet file a reader accepts, but shaped like one (header
        magic, column data, footer, footer length, footer magic). Returns
        (bytes, rows)."""
        if self.small:
            target = self.rng.randint(18 * 1024, 22 * 1024)
        else:
            target = self.rng.randint(1 * MIB, 5 * MIB)
        price = BASE_PRICE.get(pair.split('/')[0], 100.0)
        body = io.BytesIO()
        row = struct.Struct('<qddddd')
        rows = (target - 64) // row.size
        t0 = int(datetime.datetime.strptime(self.date, '%Y-%m-%d').replace(
            tzinfo=datetime.timezone.utc).timestamp()) - rows * 3600
        for i in range(rows):
            o = price
            price *= 1 + self.rng.gauss(0, 0.004)
            hi = max(o, price) * (1 + abs(self.rng.gauss(0, 0.002)))
            lo = min(o, price) * (1 - abs(self.rng.gauss(0, 0.002)))
            body.write(row.pack(t0 + i * 3600, o, hi, lo, price,
                                self.rng.uniform(1e3, 1e6)))
        footer = json.dumps({'schema': ['timestamp', 'open', 'high', 'low',
                                        'close', 'volume'],
                             'rows': rows}).encode()
        return (b'PAR1' + body.getvalue() + footer
                + struct.pack('<I', len(footer)) + b'PAR1'), rows

    def trades_csv(self, pair, n):
        price = BASE_PRICE.get(pair.split('/')[0], 100.0)
        start = datetime.datetime.strptime(self.date, '%Y-%m-%d').replace(
            tzinfo=datetime.timezone.utc) - datetime.timedelta(days=1)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator='\n')
        w.writerow(TRADE_COLUMNS)
        wins = 0
        t = start
        for i in range(n):
            t += datetime.timedelta(minutes=self.rng.randint(3, 30))
            hold = self.rng.randint(1, 240)
            direction = self.rng.choice(['LONG', 'SHORT'])
            pnl_bps = round(self.rng.gauss(4.0, 25.0), 2)
            size = round(self.rng.uniform(50, 500), 2)
            move = pnl_bps / 1e4 if direction == 'LONG' else -pnl_bps / 1e4
            entry = price * (1 + self.rng.gauss(0, 0.01))
            winner = pnl_bps > 0
            wins += winner
            w.writerow([
                i + 1, pair,
                t.strftime('%Y-%m-%dT%H:%M:%SZ'),
                (t + datetime.timedelta(minutes=hold)).strftime(
                    '%Y-%m-%dT%H:%M:%SZ'),
                '%.4f' % entry, '%.4f' % (entry * (1 + move)), direction,
                '%.2f' % size, '%.2f' % pnl_bps,
                '%.4f' % (size * pnl_bps / 1e4),
                ('TAKE_PROFIT' if pnl_bps > 20 else 'STOP_LOSS'
                 if pnl_bps < -20 else self.rng.choice(EXIT_REASONS[2:])),
                hold, winner, '%.3f' % self.rng.uniform(0.5, 0.99),
                self.rng.choice(REGIMES),
            ])
        return buf.getvalue().encode(), wins

    def metrics(self, trades, wins, pnls):
        n = len(pnls)
        mean = sum(pnls) / n if n else 0.0
        var = sum((x - mean) ** 2 for x in pnls) / n if n else 0.0
        equity, peak, dd = 0.0, 0.0, 0.0
        for x in pnls:
            equity += x
            peak = max(peak, equity)
            dd = max(dd, peak - equity)
        return {
            'total_trades': trades,
            'win_rate': round(wins / trades, 4) if trades else 0.0,
            'sharpe_ratio': round(mean / var ** 0.5 * 16, 3) if var else 0.0,
            'total_profit_gbp': round(sum(pnls) * 2.5 / 100, 2),
            'mean_return_bps': round(mean, 3),
            'max_drawdown': round(dd / 1e4, 4),
            'learning_metrics': {
                'patterns_learned': self.rng.randint(5, 60),
                'insights_generated': self.rng.randint(3, 40),
                'error_learnings': self.rng.randint(0, 10),
            },
            'agent_update_metrics': {
                'policy_loss': round(self.rng.uniform(0.01, 0.3), 5),
                'value_loss': round(self.rng.uniform(0.05, 1.2), 5),
                'entropy': round(self.rng.uniform(0.5, 1.4), 5),
                'updates': self.rng.randint(100, 2000),
            },
        }

    def features(self, rows):
        base = ['open', 'high', 'low', 'close', 'volume', 'returns_1h',
                'returns_4h', 'rsi_14', 'macd', 'macd_signal', 'atr_14',
                'bb_width', 'vwap_dist', 'volume_zscore']
        extra = ['%s_x_%s' % (a, b) for a, b in
                 [('rsi_14', 'atr_14'), ('macd', 'volume_zscore')]]
        extra += ['%s_lag_%d' % (c, k) for c in ('close', 'rsi_14')
                  for k in (1, 2, 4)]
        cols = base + extra
        return {
            'feature_columns': cols,
            'total_features': len(cols),
            'data_dimensions': {'rows': rows, 'columns': len(cols)},
            'advanced_features': {
                'higher_order_features': {
                    'interactions': True, 'polynomials': True,
                    'ratios': True, 'time_lags': True,
                },
                'granger_causality': True,
                'regime_prediction': True,
            },
        }

    # -- one run -------------------------------------------------------

    def run(self, symbol):
        pair = symbol.replace('-', '/')
        under = symbol.replace('-', '_')
        now = datetime.datetime.now(datetime.timezone.utc)
        stamp = self.date.replace('-', '') + '_' + now.strftime('%H%M%S')
        run = 'models/training/%s/%s' % (self.date, symbol)
        self.log('training_started', symbol=pair, date=self.date)

        candles, rows = self.candles_bytes(pair)
        p = self.write_file('%s/data/%s_%s_candles.parquet'
                            % (run, under, stamp), candles)
        self.log('candle_data_saved_locally', path=p, rows=rows)

        p = self.write_file(run + '/model/model.bin', self.model_bytes())
        self.log('model_saved_locally', path=p)

        n_trades = self.rng.randint(15, 25) if self.small else \
            self.rng.randint(120, 400)
        trades, wins = self.trades_csv(pair, n_trades)
        pnls = [float(r[8]) for r in csv.reader(
            io.StringIO(trades.decode())) if r[0] != 'trade_id']
        p = self.write_file(run + '/metrics/training_metrics.json',
                            (json.dumps(self.metrics(n_trades, wins, pnls),
                                        indent=2) + '\n').encode())
        self.log('metrics_saved_locally', path=p)

        p = self.write_file(run + '/features/features.json',
                            (json.dumps(self.features(rows), indent=2)
                             + '\n').encode())
        self.log('features_metadata_saved_locally', path=p)

        p = self.write_file(run + '/results/trades.csv', trades)
        self.log('trades_saved_locally', path=p, count=n_trades)
        self.log('training_complete', symbol=pair)
        return pair

    def learning_notes(self, pairs):
        insights = []
        for pair in pairs:
            for kind in ('pattern_detection', 'model_improvement',
                         'feature_importance_change'):
                insights.append({
                    'symbol': pair,
                    'type': kind,
                    'confidence': round(self.rng.uniform(0.5, 0.95), 3),
                    'detail': '%s noted for %s' % (kind.replace('_', ' '),
                                                   pair),
                })
        self.write_file('logs/learning/insights.json',
                        (json.dumps({'date': self.date,
                                     'insights': insights}, indent=2)
                         + '\n').encode())

    def health(self, pairs):
        """monitoring/health.json of today's dated folder, through the
        mount's `today` link (a plain directory has none: then the dated
        folder is named directly)."""
        if os.path.lexists(self.path('today')):
            rel = 'today/monitoring/health.json'
        else:
            day = datetime.datetime.now(
                datetime.timezone.utc).strftime('%Y-%m-%d')
            print('note: no "today" link in %s; writing %s/ directly'
                  % (self.root, day), file=self.out)
            rel = day + '/monitoring/health.json'
        now = datetime.datetime.now(datetime.timezone.utc)
        self.write_file(rel, (json.dumps({
            'status': 'healthy',
            'checked_at': now.strftime('%Y-%m-%dT%H:%M:%SZ'),
            'symbols_trained': pairs,
            'training_date': self.date,
        }, indent=2) + '\n').encode())


def main(argv=None):
    ap = argparse.ArgumentParser(
        description='Write complete training runs into DIR, as the seed'
        "'s trainer does (an example for huracanfs).")
    ap.add_argument('dir', help='the data and models directory (the mount)')
    ap.add_argument('--symbols', default=','.join(DEFAULT_SYMBOLS),
                    help='comma-separated symbols (default: %(default)s)')
    ap.add_argument('--date', default=None,
                    help='training date YYYY-MM-DD (default: today, UTC)')
    ap.add_argument('--small', action='store_true',
                    help='tiny files (model ~50 KB, candles ~20 KB)')
    ap.add_argument('--seed', type=int, default=None,
                    help='seed for deterministic bytes')
    a = ap.parse_args(argv)

    date = a.date or datetime.datetime.now(
        datetime.timezone.utc).strftime('%Y-%m-%d')
    try:
        datetime.datetime.strptime(date, '%Y-%m-%d')
    except ValueError:
        ap.error('--date: not a YYYY-MM-DD date: %r' % date)
    symbols = [s.strip() for s in a.symbols.split(',') if s.strip()]
    if not symbols:
        ap.error('--symbols: no symbol given')
    if not os.path.isdir(a.dir):
        ap.error('%s is not a directory' % a.dir)

    t = Trainer(a.dir, date, random.Random(a.seed), a.small, sys.stdout)
    pairs = [t.run(s) for s in symbols]
    t.learning_notes(pairs)
    t.health(pairs)

    for rel, size in t.written:
        print('%10d  %s' % (size, rel))
    log_size = os.path.getsize(t.path('logs/engine.log'))
    print('%10d  %s (appended)' % (log_size, 'logs/engine.log'))
    total = sum(s for _, s in t.written)
    print('wrote %d files, %d bytes, for %s on %s'
          % (len(t.written), total, ', '.join(pairs), date))
    return 0


if __name__ == '__main__':
    sys.exit(main())
