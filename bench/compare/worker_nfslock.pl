#!/usr/bin/perl
# Benchmark worker for File::NFSLock (Debian libfile-nfslock-perl).
#
# Same command line and output as worker_c.c, so the orchestrator treats every
# peer alike:
#
#   worker_nfslock.pl uncontended PATH WARMUP ROUNDS CYCLES_PER_ROUND
#   worker_nfslock.pl contended PATH COUNT LOGFILE CS_US
#   worker_nfslock.pl shared PATH SECONDS
#       (shared locks, LOCK_SH, blocking: see worker_c.c's shared mode)
#
# File::NFSLock takes the protected file's name; its lock is PATH.NFSLock.
use strict;
use warnings;
use Fcntl qw(LOCK_EX LOCK_SH LOCK_NB O_WRONLY O_CREAT O_TRUNC O_APPEND);
use File::NFSLock;
use Time::HiRes qw(clock_gettime CLOCK_MONOTONIC);

$| = 1;

# CLOCK_MONOTONIC in integer nanoseconds, the clock the other workers log.
# Time::HiRes returns float seconds; a double still resolves well under a
# microsecond at any realistic uptime.
sub now_ns { return sprintf("%.0f", clock_gettime(CLOCK_MONOTONIC) * 1e9); }

# One acquisition the way File::NFSLock is used: the constructor locks.
# Uncontended we ask for LOCK_NB (one attempt, like nfslock_create); blocking
# mode polls with sleep(1) between attempts.  Timeouts 0 = no blocking timeout
# and no stale-lock breaking.
sub acquire {
    my ($path, $flags) = @_;
    my $lock = File::NFSLock->new($path, $flags, 0, 0)
        or die "worker_nfslock: File::NFSLock->new($path): $File::NFSLock::errstr\n";
    return $lock;
}

my ($mode, $path, @args) = @ARGV;

if ($mode eq 'uncontended' && @args == 3) {
    my ($warmup, $rounds, $cycles) = @args;
    for (1 .. $warmup) { acquire($path, LOCK_EX | LOCK_NB)->unlock; }
    for (1 .. $rounds) {
        my $t0 = now_ns();
        for (1 .. $cycles) { acquire($path, LOCK_EX | LOCK_NB)->unlock; }
        printf "round_ns %.0f\n", now_ns() - $t0;
    }
} elsif ($mode eq 'contended' && @args == 3) {
    my ($count, $logpath, $cs_us) = @args;
    sysopen(my $log, $logpath, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND)
        or die "worker_nfslock: $logpath: $!\n";
    print "ready\n";    # start barrier, see worker_c.c
    defined(<STDIN>) or die "worker_nfslock: stdin closed before go\n";
    syswrite($log, "S " . now_ns() . "\n");
    for (1 .. $count) {
        my $lock = acquire($path, LOCK_EX);
        my $acquired = now_ns();
        my $end = $acquired + $cs_us * 1000;
        1 while now_ns() < $end;    # tiny busy critical section
        my $releasing = now_ns();
        $lock->unlock;
        # One syswrite per acquisition, after the release: see worker_c.c.
        syswrite($log, "A $acquired $releasing\n");
    }
    close($log);
} elsif ($mode eq 'shared' && @args == 1) {
    my ($seconds) = @args;
    print "ready\n";
    defined(<STDIN>) or die "worker_nfslock: stdin closed before go\n";
    my $start = now_ns();
    my ($end, $now, $n) = ($start + $seconds * 1e9, $start, 0);
    while ($now < $end) {
        acquire($path, LOCK_SH)->unlock;
        $n++;
        $now = now_ns();
    }
    printf "acquisitions %d elapsed_ns %.0f\n", $n, $now - $start;
} else {
    die "worker_nfslock: bad arguments @ARGV\n";
}
