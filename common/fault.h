/* fault: crash points, for tests of what a crash leaves on disk.
 *
 * vr_fault(point) ends the process at once, by _exit(VR_FAULT_EXIT) with
 * no cleanup (what kill -9 or a power cut leaves, but at a chosen line),
 * when the environment variable VISREC_FAULT names point: "point" the
 * first time the process reaches it, "point@N" the N-th time. Otherwise it
 * returns. A test sets VISREC_FAULT for the daemon it spawns, sees it exit
 * with VR_FAULT_EXIT, restarts it and checks what it finds.
 *
 * Built in with the CMake option VISREC_FAULTS (on in every build type but
 * Release); without it vr_fault is an empty inline that never reads the
 * environment, so a release daemon has no such switch.
 *
 * Points (grep vr_fault for where they sit):
 *   dvbpr-checkpoint   inside the write of a DVBPR checkpoint, after its
 *                      models and before Adam's moments and its meta
 *                      (rankd/snapshot.c).
 *   featured-batch-committed  after a batch of PutItems/Embed images is
 *                      committed, before its jobs are acknowledged
 *                      (featured/executor.c): a shard dying mid-ingest.
 *   replica-chunk      a read replica, after staging a chunk of the
 *                      writer's snapshot (rankd/replica.c).
 *   reshard-claimed    a source shard, after journalling a ReshardClaim
 *                      batch, before answering it (featured/reshard.c).
 *   reshard-imported   a target shard, after committing a ReshardImport,
 *                      before answering its checksums.
 *   reshard-deleted    a source shard, after committing a ReshardDelete,
 *                      before answering it.
 *   adopt-model        a featured shard, on receiving AdoptModel, before it
 *                      copies or re-embeds anything (featured/model_copy.c):
 *                      a shard dying before it adopts a DVBPR version.
 *   reshard-verified   the visrec CLI, after the targets' checksums of a
 *                      batch matched, before it asks the source to delete
 *                      (tools/cli_reshard.c).
 *
 * Thread-safety: any thread. */
#ifndef VR_FAULT_H
#define VR_FAULT_H

#define VR_FAULT_EXIT 86

#ifdef VISREC_FAULTS
void vr_fault(const char *point);
#else
static inline void vr_fault(const char *point)
{
	(void)point;
}
#endif

#endif
